//! AFL++ entry for the `digest` target (see callflow::fuzzing).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        callflow::fuzzing::digest(data);
    });
}
