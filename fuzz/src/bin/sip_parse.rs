//! AFL++ entry for the `sip_parse` target (see callflow::fuzzing).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        callflow::fuzzing::sip_parse(data);
    });
}
