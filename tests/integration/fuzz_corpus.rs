//! The fuzz targets (src/fuzzing.rs) on their seed corpus, on every crash
//! the fuzzer ever found (kept in fuzz/regressions/TARGET/), and on a few
//! thousand seeded mutations of the seeds: a smoke run on every `cargo
//! test`, beside the coverage-guided runs of `fuzz/run`. Then a black-box
//! run: mutated datagrams at a running `callflow serve`, which must still
//! answer OPTIONS afterwards.

// These tests are an IO edge (the black-box one watches a real socket).
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use callflow::fuzzing::TARGETS;

use crate::common::repo;
use crate::sipp::Server;

fn files(dir: &Path, extension: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .filter(|e| extension.is_none_or(|x| e.path().extension().is_some_and(|e| e == x)))
                .filter_map(|e| {
                    let bytes = std::fs::read(e.path()).ok()?;
                    Some((e.path().display().to_string(), bytes))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One mutation of `seed` (or a splice with `other`), as AFL's havoc stage
/// does in spirit: flips, interesting bytes, cuts, copies, splices.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..rng.usize(1..8) {
        let len = data.len();
        match rng.u8(0..7) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                data[i] ^= 1 << rng.u8(0..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                data[i] = *rng
                    .choice(&[
                        0u8, 0xff, 0x7f, 0x80, b'\r', b'\n', b':', b';', b'"', b'<', b'%',
                    ])
                    .unwrap_or(&0);
            }
            2 if len > 0 => data.truncate(rng.usize(..len)),
            3 if len > 1 => {
                let a = rng.usize(..len);
                let b = rng.usize(a..len);
                let piece = data[a..b].to_vec();
                let at = rng.usize(..=data.len());
                data.splice(at..at, piece);
            }
            4 if len > 1 => {
                let a = rng.usize(..len);
                let b = rng.usize(a..len);
                data.drain(a..b);
            }
            5 if !other.is_empty() => {
                let cut = rng.usize(..=data.len());
                let from = rng.usize(..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                let at = rng.usize(..=data.len());
                let digits = rng.u64(..).to_string();
                data.splice(at..at, digits.bytes());
            }
        }
    }
    data
}

#[test]
fn every_fuzz_target_survives_its_corpus_its_regressions_and_mutations() {
    let mut rng = fastrand::Rng::with_seed(4475);
    for (name, target) in TARGETS {
        let (dirs, extension) = callflow::fuzzing::seeds_of(name);
        let seeds: Vec<_> = dirs
            .iter()
            .flat_map(|d| files(&repo(d), extension))
            .collect();
        assert!(!seeds.is_empty(), "no seeds for {name}");
        let regressions = files(&repo(&format!("fuzz/regressions/{name}")), None);
        for (path, bytes) in seeds.iter().chain(&regressions) {
            let run = std::panic::catch_unwind(|| target(bytes));
            assert!(run.is_ok(), "{name} panicked on {path}");
        }
        for i in 0..2000 {
            let seed = &seeds[rng.usize(..seeds.len())].1;
            let other = &seeds[rng.usize(..seeds.len())].1;
            let input = mutate(&mut rng, seed, other);
            let run = std::panic::catch_unwind(|| target(&input));
            assert!(
                run.is_ok(),
                "{name} panicked on mutation {i}: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

#[test]
fn mutated_datagrams_do_not_stop_serve_from_answering() {
    let server = Server::start(&[]);
    let seeds: Vec<Vec<u8>> = ["tests/rfc4475", "tests/fixtures"]
        .iter()
        .flat_map(|d| files(&repo(d), Some("sip")))
        .map(|(_, b)| b)
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_nonblocking(true).ok();
    let mut rng = fastrand::Rng::with_seed(3261);
    let mut sink = [0u8; 65536];
    for i in 0..20_000 {
        let seed = &seeds[rng.usize(..seeds.len())];
        let other = &seeds[rng.usize(..seeds.len())];
        let datagram = mutate(&mut rng, seed, other);
        let _ = socket.send_to(
            &datagram[..datagram.len().min(65_000)],
            ("127.0.0.1", server.port),
        );
        // Read what comes back so that our own buffer never fills, and pace
        // a little so that the kernel does not drop what we send.
        while socket.recv_from(&mut sink).is_ok() {}
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(server.answers_options(), "{}", server.log());
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
