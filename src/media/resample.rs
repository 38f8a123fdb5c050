//! Sample-rate conversion of prompt audio to the 8,000 Hz of G.711.
//!
//! This runs once per prompt at load time, never per call, so it favours
//! being short and obviously right over speed: a windowed-sinc low-pass
//! filter (when going down in rate) followed by cubic interpolation.

/// The sampling rate of G.711 and of its RTP clock (RFC 3551 section 4.5.14).
pub const TARGET_RATE: u32 = 8_000;

/// Highest frequency the telephone band must keep (ITU-T G.712: 300-3,400 Hz).
const PASSBAND_EDGE_HZ: f64 = 3_400.0;
/// Frequencies above this are removed before decimating. Anything between
/// 4,000 and 4,600 Hz that leaks through folds to 3,400-4,000 Hz, above the
/// telephone band, so the filter may be gentle around the Nyquist frequency.
const STOPBAND_EDGE_HZ: f64 = 4_600.0;

/// Converts mono samples at `rate` Hz to [`TARGET_RATE`].
///
/// The output has `ceil(len * 8000 / rate)` samples, so a file of whole
/// seconds gives whole seconds. When downsampling, a Hamming-windowed sinc
/// (about 53 dB of stopband rejection) first removes what would alias.
/// Catmull-Rom cubic interpolation then picks the output instants: unlike
/// linear interpolation it keeps the upper telephone band (linear loses
/// several dB near 3.4 kHz from 11,025 Hz sources), for two more taps.
pub fn resample_to_8khz(input: &[f32], rate: u32) -> Vec<f32> {
    if rate == TARGET_RATE || rate == 0 || input.is_empty() {
        return input.to_vec();
    }
    let rate = u64::from(rate);
    let target = u64::from(TARGET_RATE);
    let out_len = (input.len() as u64 * target).div_ceil(rate) as usize;
    let filtered = if rate > target {
        let taps = low_pass(rate as f64);
        (0..input.len())
            .map(|i| convolve_at(input, &taps, i))
            .collect()
    } else {
        input.to_vec()
    };
    // Beyond the ends, repeat the end samples.
    let at = |i: i64| filtered[i.clamp(0, filtered.len() as i64 - 1) as usize];
    (0..out_len as u64)
        .map(|j| {
            // Exact integer position, so no drift accumulates over long prompts.
            let position = j * rate;
            let i = (position / target) as i64;
            let t = (position % target) as f32 / target as f32;
            let (p0, p1, p2, p3) = (at(i - 1), at(i), at(i + 1), at(i + 2));
            p1 + 0.5
                * t
                * (p2 - p0
                    + t * (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3 + t * (3.0 * (p1 - p2) + p3 - p0)))
        })
        .collect()
}

/// Designs a linear-phase low-pass FIR for input at `rate` Hz, with its
/// -6 dB point midway between the passband and stopband edges; the number
/// of taps follows from the Hamming window's transition width, 3.3 / N of
/// the sampling rate.
fn low_pass(rate: f64) -> Vec<f32> {
    let width = (STOPBAND_EDGE_HZ - PASSBAND_EDGE_HZ) / rate;
    let half = (3.3 / width / 2.0).ceil() as usize;
    let len = 2 * half + 1;
    let cutoff = (PASSBAND_EDGE_HZ + STOPBAND_EDGE_HZ) / 2.0 / rate;
    let mut taps: Vec<f64> = (0..len)
        .map(|k| {
            let n = k as f64 - half as f64;
            let sinc = if n == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * n).sin() / (std::f64::consts::PI * n)
            };
            let window =
                0.54 - 0.46 * (2.0 * std::f64::consts::PI * k as f64 / (len - 1) as f64).cos();
            sinc * window
        })
        .collect();
    // Unity gain at DC, so levels in the prompt files are kept.
    let sum: f64 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps.into_iter().map(|t| t as f32).collect()
}

/// The filtered sample at `index`, treating samples beyond either end as
/// silence (the filter is symmetric, so the centre tap lines up with it).
fn convolve_at(input: &[f32], taps: &[f32], index: usize) -> f32 {
    let half = taps.len() / 2;
    let first = index.saturating_sub(half);
    let last = (index + half).min(input.len() - 1);
    (first..=last)
        .map(|i| input[i] * taps[i + half - index])
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, seconds: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate) + 0.3).sin())
                    as f32
            })
            .collect()
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
    }

    /// Skips the first and last 10 ms, where the filter sees the silence
    /// beyond the ends.
    fn middle(samples: &[f32]) -> &[f32] {
        &samples[80..samples.len() - 80]
    }

    #[test]
    fn whole_seconds_stay_whole_seconds() {
        for rate in [6_000, 11_025, 16_000, 22_050, 44_100, 48_000] {
            let out = resample_to_8khz(&vec![0.0; rate as usize * 2], rate);
            assert_eq!(out.len(), 16_000, "{rate} Hz");
        }
        assert_eq!(resample_to_8khz(&[0.0; 3], 44_100).len(), 1);
        assert!(resample_to_8khz(&[], 44_100).is_empty());
    }

    #[test]
    fn eight_khz_passes_through_untouched() {
        let input = sine(8_000, 1_000.0, 0.1);
        assert_eq!(resample_to_8khz(&input, 8_000), input);
    }

    #[test]
    fn dc_level_is_kept() {
        for rate in [11_025, 16_000, 44_100] {
            let out = resample_to_8khz(&vec![0.25; rate as usize], rate);
            for &s in middle(&out) {
                assert!((s - 0.25).abs() < 1e-3, "{rate} Hz: {s}");
            }
        }
    }

    #[test]
    fn passband_tone_keeps_its_level() {
        for rate in [6_000, 16_000, 44_100, 48_000] {
            let out = resample_to_8khz(&sine(rate, 1_000.0, 1.0), rate);
            let level = rms(middle(&out));
            let expected = 0.5 / 2f32.sqrt();
            assert!((level - expected).abs() < 0.02, "{rate} Hz: rms {level}");
        }
    }

    #[test]
    fn upper_telephone_band_keeps_its_level() {
        // Sources at 8 kHz or less have no band above their own Nyquist.
        for rate in [11_025, 16_000, 22_050, 44_100] {
            let out = resample_to_8khz(&sine(rate, 2_900.0, 1.0), rate);
            let level = rms(middle(&out)) / (0.5 / 2f32.sqrt());
            assert!(
                level > 0.9 && level < 1.05,
                "{rate} Hz: {level} of the input level"
            );
        }
    }

    #[test]
    fn tone_above_nyquist_is_removed_not_aliased() {
        // Without the low-pass, 6 kHz would fold to an audible 2 kHz.
        for rate in [16_000, 44_100, 48_000] {
            let out = resample_to_8khz(&sine(rate, 6_000.0, 1.0), rate);
            let level = rms(middle(&out));
            assert!(level < 0.005, "{rate} Hz: rms {level}");
        }
    }
}
