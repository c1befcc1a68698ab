//! Every release component of `spin.toml` stays under 1 MiB (the project
//! owner's bound: what a cold start on an edge node has to load). `./dev
//! test` builds them first; their sizes are also in every benchmark report.

use edge_tests::workspace_dir;

const LIMIT: u64 = 1024 * 1024;

#[test]
fn every_release_component_is_under_one_mib() {
    let manifest: toml::Table = std::fs::read_to_string(workspace_dir().join("spin.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let components = manifest["component"].as_table().unwrap();
    assert!(!components.is_empty());
    for (name, component) in components {
        let source = workspace_dir().join(component["source"].as_str().unwrap());
        let size = std::fs::metadata(&source)
            .unwrap_or_else(|e| panic!("{}: {e} (./dev build makes it)", source.display()))
            .len();
        assert!(size < LIMIT, "{name}: {} KiB, over 1 MiB", size / 1024);
    }
}
