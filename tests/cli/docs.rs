//! README.md documents every configuration key and every lineage-store table, view and column, so
//! the reference cannot silently fall behind the code.

const README: &str = include_str!("../../README.md");

#[test]
fn every_configuration_key_is_documented() {
    let missing: Vec<String> =
        dbsweep::config::leaf_keys().into_iter().filter(|k| !README.contains(&format!("| `{k}` |"))).collect();
    assert!(missing.is_empty(), "README.md lacks rows for {missing:?}");
}

#[test]
fn every_store_table_and_column_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    dbsweep::store::Store::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut tables =
        conn.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name").unwrap();
    let tables: Vec<String> = tables.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert!(tables.len() >= 10, "{tables:?}");
    let mut missing = Vec::new();
    for table in &tables {
        let Some(line) = README.lines().find(|l| l.starts_with(&format!("| `{table}` |"))) else {
            missing.push(table.clone());
            continue;
        };
        let mut cols = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')")).unwrap();
        let cols: Vec<String> = cols.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        missing.extend(cols.into_iter().filter(|c| !line.contains(&format!("`{c}`"))).map(|c| format!("{table}.{c}")));
    }
    assert!(missing.is_empty(), "README.md lacks {missing:?}");
}
