//! Which worker a SIP datagram belongs to. A listener runs one endpoint
//! per worker and hands each datagram to the worker that owns its
//! Call-ID: every request and response of a dialog carries the same one,
//! so a call never spans two workers. The Call-ID is found by a scan of
//! the header lines, without parsing the message: the owning worker
//! parses it (and answers it if it is broken).

/// The Call-ID's value in a datagram (`Call-ID:` or its compact form
/// `i:`, in any case), or `None` if it has none.
pub fn call_id_of(datagram: &[u8]) -> Option<&[u8]> {
    // As the parser does: CRLFs before a message (keep-alives sent ahead
    // of it) are not part of it.
    let start = datagram
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(datagram.len());
    let datagram = &datagram[start..];
    let head_end = find(datagram, b"\r\n\r\n").unwrap_or(datagram.len());
    let head = &datagram[..head_end];
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A folded continuation (RFC 3261 7.3.1) is part of the header
        // above it, whatever it says.
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            return Some(trim(&line[colon + 1..]));
        }
    }
    None
}

/// The worker, of `shards`, that owns `call_id` (FNV-1a, so that every
/// listener and every worker agrees, run after run).
pub fn shard_of(call_id: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in call_id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_id_is_found_in_either_form_and_any_case() {
        let full = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCALL-id:  abc@host \r\n\r\nCall-ID: body";
        assert_eq!(call_id_of(full), Some(&b"abc@host"[..]));
        let compact = b"SIP/2.0 200 OK\r\ni:xyz\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(call_id_of(compact), Some(&b"xyz"[..]));
        assert_eq!(call_id_of(b"garbage"), None);
        let prefixed = b"\r\n\r\nBYE x SIP/2.0\r\nCall-ID: k\r\n\r\n";
        assert_eq!(call_id_of(prefixed), Some(&b"k"[..]));
        let folded = b"BYE x SIP/2.0\r\nSubject: a\r\n Call-ID: fake\r\nCall-ID: real\r\n\r\n";
        assert_eq!(call_id_of(folded), Some(&b"real"[..]));
        assert_eq!(
            call_id_of(b"INVITE x SIP/2.0\r\nTo: <sip:i@x>\r\n\r\n"),
            None
        );
    }

    #[test]
    fn call_ids_spread_over_the_workers_and_always_land_on_the_same_one() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let id = format!("{i}-call@10.0.0.1");
            let s = shard_of(id.as_bytes(), 4);
            assert_eq!(s, shard_of(id.as_bytes(), 4));
            counts[s] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_of(b"anything", 1), 0);
    }
}
