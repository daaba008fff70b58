//! The demo's seed, carried in the binary so that an installed `keyscore demo` runs anywhere:
//! the model files of `seed/models/<key>/v<N>.json` and the records of `seed/records.jsonl`.
//! A test checks that this list names exactly the files under `seed/models`.

/// Every seed model: (key, version, spec JSON), sorted by key and version.
pub(super) const MODELS: [(&str, i64, &str); 10] = [
    (
        "_default",
        1,
        include_str!("../../seed/models/_default/v1.json"),
    ),
    (
        "amsterdam",
        1,
        include_str!("../../seed/models/amsterdam/v1.json"),
    ),
    (
        "berlin",
        1,
        include_str!("../../seed/models/berlin/v1.json"),
    ),
    (
        "lisbon",
        1,
        include_str!("../../seed/models/lisbon/v1.json"),
    ),
    (
        "london",
        1,
        include_str!("../../seed/models/london/v1.json"),
    ),
    (
        "madrid",
        1,
        include_str!("../../seed/models/madrid/v1.json"),
    ),
    ("paris", 1, include_str!("../../seed/models/paris/v1.json")),
    ("paris", 2, include_str!("../../seed/models/paris/v2.json")),
    ("rome", 1, include_str!("../../seed/models/rome/v1.json")),
    (
        "vienna",
        1,
        include_str!("../../seed/models/vienna/v1.json"),
    ),
];

/// The seed records, one JSON object per line.
pub(super) const RECORDS: &[u8] = include_bytes!("../../seed/records.jsonl");

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_embedded_seed_is_the_seed_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seed");
        let mut on_disk = Vec::new();
        for key in std::fs::read_dir(dir.join("models")).unwrap() {
            let key = key.unwrap();
            for file in std::fs::read_dir(key.path()).unwrap() {
                let path = file.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if let Some(v) = name.strip_prefix('v').and_then(|n| n.strip_suffix(".json")) {
                    on_disk.push((
                        key.file_name().to_string_lossy().into_owned(),
                        v.parse::<i64>().unwrap(),
                        std::fs::read_to_string(&path).unwrap(),
                    ));
                }
            }
        }
        on_disk.sort();
        let embedded: Vec<(String, i64, String)> = super::MODELS
            .iter()
            .map(|(k, v, s)| (k.to_string(), *v, s.to_string()))
            .collect();
        assert_eq!(embedded, on_disk, "src/cli/demo_seed.rs lists seed/models");
        assert_eq!(
            super::RECORDS,
            std::fs::read(dir.join("records.jsonl")).unwrap().as_slice()
        );
    }
}
