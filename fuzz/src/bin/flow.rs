//! AFL++ entry for the `flow` target (see callflow::fuzzing).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        callflow::fuzzing::flow(data);
    });
}
