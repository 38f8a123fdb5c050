//! The JSON Schema of flow files, generated from the serde model so that it
//! cannot drift from what the loader accepts. `flows/schema.json` is a
//! committed copy for editors; a test fails when it is stale.

use super::model::FlowFile;

/// The schema as pretty-printed JSON, ending with a newline.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(FlowFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/flows/schema.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == schema_json(),
            "flows/schema.json is stale; regenerate it with `cargo run -- schema > flows/schema.json`"
        );
    }
}
