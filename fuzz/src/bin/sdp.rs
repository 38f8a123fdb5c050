//! AFL++ entry for the `sdp` target (see callflow::fuzzing).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        callflow::fuzzing::sdp_offer(data);
    });
}
