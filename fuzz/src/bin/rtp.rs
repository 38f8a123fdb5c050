//! AFL++ entry for the `rtp` target (see callflow::fuzzing).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        callflow::fuzzing::rtp(data);
    });
}
