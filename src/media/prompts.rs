//! The prompt cache: every prompt file read, converted to 8 kHz and encoded
//! as both PCMU and PCMA once at load, so that playing a prompt on a call is
//! only a reference-count increment and 160-byte copies.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hound::{SampleFormat, WavReader};

use super::g711::Codec;
use super::resample::{resample_to_8khz, TARGET_RATE};

/// Higher sampling rates than this are not audio we expect in a prompt
/// directory and would make the load-time filter needlessly long.
const MAX_SAMPLE_RATE: u32 = 384_000;

/// Why a prompt file could not be loaded; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file could not be opened, is not a WAV file, or its sample data
    /// is truncated or malformed.
    #[error("{}: cannot read WAV audio: {source}", .path.display())]
    Wav {
        /// The prompt file.
        path: PathBuf,
        /// What hound reported.
        source: hound::Error,
    },
    /// The file is a valid WAV file in a format we do not convert.
    #[error("{}: unsupported WAV format: {detail}", .path.display())]
    Unsupported {
        /// The prompt file.
        path: PathBuf,
        /// The format found, for example "64-bit float samples".
        detail: String,
    },
    /// The file holds no samples: playing it would be dead air, which is
    /// never what the flow's author meant.
    #[error("{}: the WAV file holds no audio", .path.display())]
    Empty {
        /// The prompt file.
        path: PathBuf,
    },
}

/// One prompt, encoded for each codec a call may negotiate.
#[derive(Debug, Clone)]
struct EncodedPrompt {
    pcmu: Arc<[u8]>,
    pcma: Arc<[u8]>,
}

/// All prompts of a flow set, ready to play: for each prompt id (its index in
/// the list given to [`PromptCache::load`]) the audio at 8,000 samples/s as
/// PCMU and PCMA, one byte per sample, so 160 bytes per 20 ms RTP packet.
///
/// Buffers are `Arc<[u8]>` so that thousands of concurrent calls share one
/// copy and a reload can swap the cache while old calls finish on the old one.
#[derive(Debug, Clone, Default)]
pub struct PromptCache {
    prompts: Vec<EncodedPrompt>,
}

impl PromptCache {
    /// Reads, converts and encodes every file; prompt id `n` is `files[n]`.
    ///
    /// Accepts WAV with 8- to 32-bit integer or 32-bit float samples, at any
    /// rate, with any number of channels (mixed down to mono by averaging).
    /// Stops at the first file that fails, naming it.
    pub fn load(files: &[PathBuf]) -> Result<PromptCache, MediaError> {
        let prompts = files
            .iter()
            .map(|path| {
                let (samples, rate) = read_mono(path)?;
                Ok(encode(&resample_to_8khz(&samples, rate)))
            })
            .collect::<Result<_, MediaError>>()?;
        Ok(PromptCache { prompts })
    }

    /// Builds a cache from audio already at 8 kHz, one entry per prompt id;
    /// for tests and tools that synthesise prompts rather than read files.
    pub fn from_samples(prompts: &[Vec<i16>]) -> PromptCache {
        let prompts = prompts
            .iter()
            .map(|samples| EncodedPrompt {
                pcmu: Codec::Pcmu.encode(samples).into(),
                pcma: Codec::Pcma.encode(samples).into(),
            })
            .collect();
        PromptCache { prompts }
    }

    /// The encoded audio of prompt `id` for `codec`, or `None` if no such id.
    pub fn get(&self, id: u32, codec: Codec) -> Option<&Arc<[u8]>> {
        let prompt = self.prompts.get(usize::try_from(id).ok()?)?;
        Some(match codec {
            Codec::Pcmu => &prompt.pcmu,
            Codec::Pcma => &prompt.pcma,
        })
    }

    /// How long prompt `id` plays, or `None` if no such id; for timers that
    /// start when a prompt ends (menu timeouts).
    pub fn duration(&self, id: u32) -> Option<Duration> {
        let samples = self.get(id, Codec::Pcmu)?.len() as u64;
        Some(Duration::from_nanos(
            samples * 1_000_000_000 / u64::from(TARGET_RATE),
        ))
    }

    /// The number of prompts (the ids are `0..len()`).
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Whether the cache holds no prompt.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
}

/// Encodes 8 kHz samples in [-1, 1] for both codecs.
fn encode(samples: &[f32]) -> EncodedPrompt {
    // `as` saturates out-of-range values and maps NaN to 0, which is what a
    // clipped or corrupt float sample should become.
    let linear: Vec<i16> = samples
        .iter()
        .map(|s| (s * 32_767.0).round() as i16)
        .collect();
    EncodedPrompt {
        pcmu: Codec::Pcmu.encode(&linear).into(),
        pcma: Codec::Pcma.encode(&linear).into(),
    }
}

/// Reads a WAV file as mono samples in [-1, 1] and its sampling rate.
fn read_mono(path: &Path) -> Result<(Vec<f32>, u32), MediaError> {
    let wav = |source| MediaError::Wav {
        path: path.to_owned(),
        source,
    };
    let unsupported = |detail: String| MediaError::Unsupported {
        path: path.to_owned(),
        detail,
    };
    let mut reader = WavReader::open(path).map_err(wav)?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(unsupported("zero channels".into()));
    }
    if spec.sample_rate == 0 || spec.sample_rate > MAX_SAMPLE_RATE {
        return Err(unsupported(format!("sample rate {} Hz", spec.sample_rate)));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Int, bits @ 8..=32) => {
            // hound sign-extends every width (and recentres unsigned 8-bit),
            // so full scale is 2^(bits-1) for all of them.
            let scale = 1.0 / f64::from(bits - 1).exp2();
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| (f64::from(s) * scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(wav)?
        }
        (SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(wav)?,
        (format, bits) => {
            let kind = match format {
                SampleFormat::Int => "integer",
                SampleFormat::Float => "float",
            };
            return Err(unsupported(format!("{bits}-bit {kind} samples")));
        }
    };
    let channels = usize::from(spec.channels);
    let mono: Vec<f32> = interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect();
    if mono.is_empty() {
        return Err(MediaError::Empty {
            path: path.to_owned(),
        });
    }
    Ok((mono, spec.sample_rate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hound::{WavSpec, WavWriter};

    const AMPLITUDE: f64 = 0.5;

    fn tone(t: f64) -> f64 {
        AMPLITUDE * (2.0 * std::f64::consts::PI * 1_000.0 * t + 0.3).sin()
    }

    /// Writes one second of a 1 kHz tone; channel `c` is scaled by
    /// `gains[c]`, so the mixdown level is their mean.
    fn write_tone(dir: &Path, name: &str, spec: WavSpec, gains: &[f64]) -> PathBuf {
        assert_eq!(gains.len(), usize::from(spec.channels));
        let path = dir.join(name);
        let mut writer = WavWriter::create(&path, spec).unwrap();
        let full_scale = f64::from(spec.bits_per_sample - 1).exp2() - 1.0;
        for i in 0..spec.sample_rate {
            let v = tone(f64::from(i) / f64::from(spec.sample_rate));
            for gain in gains {
                match spec.sample_format {
                    SampleFormat::Float => writer.write_sample((v * gain) as f32).unwrap(),
                    SampleFormat::Int if spec.bits_per_sample == 8 => {
                        writer.write_sample((v * gain * full_scale) as i8).unwrap()
                    }
                    SampleFormat::Int => {
                        writer.write_sample((v * gain * full_scale) as i32).unwrap()
                    }
                }
            }
        }
        writer.finalize().unwrap();
        path
    }

    fn spec(channels: u16, sample_rate: u32, bits: u16, format: SampleFormat) -> WavSpec {
        WavSpec {
            channels,
            sample_rate,
            bits_per_sample: bits,
            sample_format: format,
        }
    }

    /// Sign changes per second and RMS level relative to full scale, of the
    /// decoded audio without its first and last 10 ms (filter edges).
    fn analyse(codec: Codec, encoded: &[u8]) -> (usize, f64) {
        let decoded = codec.decode(encoded);
        let middle = &decoded[80..decoded.len() - 80];
        let crossings = middle
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        let power = middle.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / middle.len() as f64;
        let seconds = middle.len() as f64 / 8_000.0;
        (
            (crossings as f64 / seconds).round() as usize,
            power.sqrt() / 32_768.0,
        )
    }

    #[test]
    fn loads_common_formats_to_one_second_at_8khz() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            write_tone(
                dir.path(),
                "stereo16k.wav",
                spec(2, 16_000, 16, SampleFormat::Int),
                &[1.0, 0.5],
            ),
            write_tone(
                dir.path(),
                "mono8k.wav",
                spec(1, 8_000, 16, SampleFormat::Int),
                &[1.0],
            ),
            write_tone(
                dir.path(),
                "cd.wav",
                spec(1, 44_100, 24, SampleFormat::Int),
                &[1.0],
            ),
            write_tone(
                dir.path(),
                "float48k.wav",
                spec(2, 48_000, 32, SampleFormat::Float),
                &[1.0, 1.0],
            ),
            write_tone(
                dir.path(),
                "byte11k.wav",
                spec(1, 11_025, 8, SampleFormat::Int),
                &[1.0],
            ),
            write_tone(
                dir.path(),
                "int32.wav",
                spec(1, 22_050, 32, SampleFormat::Int),
                &[1.0],
            ),
        ];
        let cache = PromptCache::load(&files).unwrap();
        assert_eq!(cache.len(), files.len());
        let mixdown_gain = [0.75, 1.0, 1.0, 1.0, 1.0, 1.0];
        for (id, gain) in (0..).zip(mixdown_gain) {
            assert_eq!(
                cache.duration(id),
                Some(Duration::from_secs(1)),
                "prompt {id}"
            );
            for codec in [Codec::Pcmu, Codec::Pcma] {
                let audio = cache.get(id, codec).unwrap();
                assert_eq!(audio.len(), 8_000, "prompt {id} {codec:?}");
                let (crossings, level) = analyse(codec, audio);
                // A 1 kHz tone crosses zero 2,000 times a second.
                assert!(
                    crossings.abs_diff(2_000) <= 4,
                    "prompt {id} {codec:?}: {crossings}"
                );
                let expected = AMPLITUDE * gain / 2f64.sqrt();
                assert!(
                    (level - expected).abs() < 0.03,
                    "prompt {id} {codec:?}: rms {level}"
                );
            }
        }
        assert!(cache.get(6, Codec::Pcmu).is_none());
        assert_eq!(cache.duration(6), None);
    }

    #[test]
    fn stereo_is_mixed_down_not_just_the_left_channel() {
        let dir = tempfile::tempdir().unwrap();
        let opposite = write_tone(
            dir.path(),
            "o.wav",
            spec(2, 16_000, 16, SampleFormat::Int),
            &[1.0, -1.0],
        );
        let cache = PromptCache::load(&[opposite]).unwrap();
        let (_, level) = analyse(Codec::Pcmu, cache.get(0, Codec::Pcmu).unwrap());
        assert!(level < 0.001, "rms {level}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.wav");
        let err = PromptCache::load(std::slice::from_ref(&missing)).unwrap_err();
        assert!(matches!(&err, MediaError::Wav { path, .. } if *path == missing));
        assert!(err.to_string().contains("missing.wav"), "{err}");

        let garbage = dir.path().join("garbage.wav");
        std::fs::write(&garbage, b"RIFF\x04\0\0\0WAVEnot really").unwrap();
        let err = PromptCache::load(&[garbage]).unwrap_err();
        assert!(matches!(err, MediaError::Wav { .. }), "{err}");

        let empty = dir.path().join("empty.wav");
        WavWriter::create(&empty, spec(1, 8_000, 16, SampleFormat::Int))
            .unwrap()
            .finalize()
            .unwrap();
        let err = PromptCache::load(&[empty]).unwrap_err();
        assert!(matches!(err, MediaError::Empty { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("empty.wav: the WAV file holds no audio"),
            "{err}"
        );
    }

    #[test]
    fn truncated_sample_data_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_tone(
            dir.path(),
            "t.wav",
            spec(1, 8_000, 16, SampleFormat::Int),
            &[1.0],
        );
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2 + 1]).unwrap();
        assert!(matches!(
            PromptCache::load(&[path]),
            Err(MediaError::Wav { .. })
        ));
    }

    #[test]
    fn from_samples_encodes_both_codecs() {
        let cache = PromptCache::from_samples(&[vec![0; 160], vec![]]);
        assert_eq!(cache.get(0, Codec::Pcmu).unwrap()[..], [0xFF; 160]);
        assert_eq!(cache.get(0, Codec::Pcma).unwrap()[..], [0xD5; 160]);
        assert_eq!(cache.duration(0), Some(Duration::from_millis(20)));
        assert_eq!(cache.duration(1), Some(Duration::ZERO));
        assert!(PromptCache::default().is_empty());
    }
}
