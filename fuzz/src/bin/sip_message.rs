//! AFL++ entry for the `sip_message` target (see callflow::fuzzing).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        callflow::fuzzing::sip_message(data);
    });
}
