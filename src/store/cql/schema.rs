//! The CQL schema: the numbered files of `cql/`, embedded in the binary and applied in order
//! with the store's keyspace in place of `keyscore`, and the keyspace `init` creates: its
//! replication, and tablets turned off on the ScyllaDB versions that refuse lightweight
//! transactions in tablets keyspaces.

use crate::store::Error;

/// The development keyspace file: documentation of the keyspace `init` creates when given no
/// replication; `init` builds the statement itself ([`create_keyspace`]).
#[cfg(test)]
const KEYSPACE_FILE: &str = include_str!("../../../cql/001_keyspace.cql");

/// The table files, in the order `init` applies them.
const TABLE_FILES: [(&str, &str); 7] = [
    (
        "010_model_versions.cql",
        include_str!("../../../cql/010_model_versions.cql"),
    ),
    (
        "020_active_models.cql",
        include_str!("../../../cql/020_active_models.cql"),
    ),
    (
        "030_model_changes.cql",
        include_str!("../../../cql/030_model_changes.cql"),
    ),
    (
        "040_model_rollouts.cql",
        include_str!("../../../cql/040_model_rollouts.cql"),
    ),
    (
        "050_model_history.cql",
        include_str!("../../../cql/050_model_history.cql"),
    ),
    (
        "060_model_quality.cql",
        include_str!("../../../cql/060_model_quality.cql"),
    ),
    (
        "070_added_columns.cql",
        include_str!("../../../cql/070_added_columns.cql"),
    ),
];

/// Columns this keyscore relies on, per table: `init` refuses a keyspace whose tables (made by
/// an older keyscore) lack them.
pub(crate) const REQUIRED_COLUMNS: &[(&str, &[&str])] = &[
    (
        "model_versions",
        &["encoding", "spec_id", "chunks", "size", "sha256"],
    ),
    ("model_spec_chunks", &["spec_id", "chunk", "data"]),
    (
        "active_models",
        &["version", "previous_version", "revision"],
    ),
    (
        "model_changes",
        &["day", "bucket", "changed_at", "revision"],
    ),
    (
        "model_rollouts",
        &[
            "revision",
            "canary_auto",
            "promote_version",
            "promote_from_revision",
        ],
    ),
    ("model_history", &["evidence"]),
    (
        "model_quality",
        &["key", "version", "window_end", "arm", "written_by"],
    ),
];

/// The keyspace name the schema files are written with.
const FILE_KEYSPACE: &str = "keyscore";

/// Every table statement for `keyspace`, in order.
pub(crate) fn table_statements(keyspace: &str) -> Vec<String> {
    TABLE_FILES
        .iter()
        .flat_map(|(_, text)| split_statements(text))
        .map(|statement| substitute_keyspace(&statement, keyspace))
        .collect()
}

/// The table and column an `ALTER TABLE keyspace.table ADD column type` statement adds, or
/// `None` for any other statement. `init` runs such a statement only when the column is
/// missing (see `cql/070_added_columns.cql`).
pub(crate) fn added_column(statement: &str) -> Option<(&str, &str)> {
    let mut words = statement.split_whitespace();
    let keyword = |w: Option<&str>, k: &str| w.is_some_and(|w| w.eq_ignore_ascii_case(k));
    if !(keyword(words.next(), "ALTER") && keyword(words.next(), "TABLE")) {
        return None;
    }
    let table = words.next()?;
    let table = table.rsplit_once('.').map_or(table, |(_, t)| t);
    if !keyword(words.next(), "ADD") {
        return None;
    }
    let column = words.next()?;
    (words.next().is_some() && words.next().is_none()).then_some((table, column))
}

/// A replication given to `init`, as the CQL map of `CREATE KEYSPACE`: `None` is the
/// development default (SimpleStrategy, one replica; `true` in the answer says so), `DC=N,...`
/// is NetworkTopologyStrategy, and text in braces is taken as a CQL map naming its class.
pub(crate) fn replication_map(given: Option<&str>) -> Result<(String, bool), Error> {
    let Some(given) = given.map(str::trim).filter(|g| !g.is_empty()) else {
        return Ok((
            "{'class': 'SimpleStrategy', 'replication_factor': 1}".to_string(),
            true,
        ));
    };
    if given.starts_with('{') {
        if !given.ends_with('}') || !given.contains("'class'") {
            return Err(Error::Url(format!(
                "bad --replication '{given}': a CQL map must be in braces and name its 'class', \
                 e.g. {{'class': 'NetworkTopologyStrategy', 'dc1': 3}}"
            )));
        }
        let dev = given.contains("SimpleStrategy");
        return Ok((given.to_string(), dev));
    }
    let mut entries = vec!["'class': 'NetworkTopologyStrategy'".to_string()];
    for pair in given.split(',') {
        let bad = || {
            Error::Url(format!(
                "bad --replication '{given}': use DC=N[,DC=N...], e.g. dc1=3, or a CQL map"
            ))
        };
        let (dc, n) = pair.split_once('=').ok_or_else(bad)?;
        let (dc, n) = (dc.trim(), n.trim());
        let n: u32 = n.parse().map_err(|_| bad())?;
        if dc.is_empty() || n == 0 || dc.contains('\'') {
            return Err(bad());
        }
        entries.push(format!("'{dc}': {n}"));
    }
    Ok((format!("{{{}}}", entries.join(", ")), false))
}

/// `CREATE KEYSPACE IF NOT EXISTS` with `replication`, and tablets off when asked.
pub(crate) fn create_keyspace(keyspace: &str, replication: &str, tablets_off: bool) -> String {
    let tablets = if tablets_off {
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}{tablets}")
}

/// ScyllaDB's version as (major, minor), from `system.versions`; `None` for other text.
pub(crate) fn scylla_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split(['.', '-', '~']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Whether a ScyllaDB of `version` creates keyspaces with tablets (6.0 on, for
/// NetworkTopologyStrategy keyspaces) but refuses lightweight transactions in them (before
/// 2025.4). ScyllaDB 2025.3 documentation, Lightweight Transactions: "The LWT feature is not
/// supported in keyspaces with tablets enabled"; 2025.4 lifts it.
pub(crate) fn refuses_lwt_with_tablets(version: (u32, u32)) -> bool {
    let (major, minor) = version;
    (6..2025).contains(&major) || (major == 2025 && minor < 4)
}

/// Splits CQL text into statements at `;`, dropping `--`, `//` and `/* */` comments and
/// empty statements. Semicolons and comment markers inside quoted strings (`'...'`, `"..."`)
/// or `$$...$$` blocks are kept.
pub(crate) fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // A doubled quote inside a string is an escaped quote: the loop closes the
                // string and immediately reopens it, which yields the same text.
                current.push(c);
                for d in chars.by_ref() {
                    current.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '$' if chars.peek() == Some(&'$') => {
                current.push_str("$$");
                chars.next();
                let mut previous = '\0';
                for d in chars.by_ref() {
                    current.push(d);
                    if previous == '$' && d == '$' {
                        break;
                    }
                    previous = d;
                }
            }
            '-' if chars.peek() == Some(&'-') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = '\0';
                for d in chars.by_ref() {
                    if previous == '*' && d == '/' {
                        break;
                    }
                    previous = d;
                }
                current.push(' ');
            }
            ';' => push_statement(&mut statements, &mut current),
            _ => current.push(c),
        }
    }
    push_statement(&mut statements, &mut current);
    statements
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for d in chars.by_ref() {
        if d == '\n' {
            break;
        }
    }
}

fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let statement = current.trim();
    if !statement.is_empty() {
        statements.push(statement.to_string());
    }
    current.clear();
}

/// Replaces the identifier `keyscore` (the keyspace the files name, as in
/// `CREATE KEYSPACE IF NOT EXISTS keyscore` and `keyscore.table`) with `keyspace`. Quoted
/// strings and longer identifiers that merely contain the word are left alone.
pub(crate) fn substitute_keyspace(statement: &str, keyspace: &str) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut chars = statement.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '\'' || c == '"' {
            out.push(c);
            for (_, d) in chars.by_ref() {
                out.push(d);
                if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' {
                    end = i + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &statement[start..end];
            out.push_str(if word == FILE_KEYSPACE {
                keyspace
            } else {
                word
            });
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_come_in_file_order() {
        let statements = table_statements("keyscore");
        let starts = [
            "CREATE TABLE IF NOT EXISTS keyscore.model_versions",
            "CREATE TABLE IF NOT EXISTS keyscore.model_spec_chunks",
            "CREATE TABLE IF NOT EXISTS keyscore.active_models",
            "CREATE TABLE IF NOT EXISTS keyscore.model_changes",
            "CREATE TABLE IF NOT EXISTS keyscore.model_rollouts",
            "CREATE TABLE IF NOT EXISTS keyscore.model_history",
            "CREATE TABLE IF NOT EXISTS keyscore.model_quality",
            "ALTER TABLE keyscore.model_rollouts ADD canary_auto text",
            "ALTER TABLE keyscore.model_rollouts ADD promote_version bigint",
            "ALTER TABLE keyscore.model_rollouts ADD promote_from_revision bigint",
            "ALTER TABLE keyscore.model_history ADD evidence text",
        ];
        assert_eq!(statements.len(), starts.len(), "{statements:#?}");
        for (statement, start) in statements.iter().zip(starts) {
            assert!(statement.starts_with(start), "{statement}");
            assert!(!statement.contains("--"), "comment left in {statement}");
            assert!(!statement.ends_with(';'), "{statement}");
        }
        assert!(statements[3].contains("default_time_to_live = 1209600"));
        assert!(statements[6].contains("default_time_to_live = 2592000"));
    }

    #[test]
    fn every_added_column_is_in_its_table_s_create_statement() {
        let statements = table_statements("keyscore");
        let added: Vec<(&str, &str)> = statements.iter().filter_map(|s| added_column(s)).collect();
        assert_eq!(added.len(), 4, "{statements:#?}");
        for (table, column) in added {
            let create = statements
                .iter()
                .find(|s| s.starts_with(&format!("CREATE TABLE IF NOT EXISTS keyscore.{table} ")))
                .unwrap_or_else(|| panic!("no CREATE of {table}"));
            assert!(
                create
                    .lines()
                    .any(|l| l.trim().starts_with(&format!("{column} "))),
                "{table}.{column} is added by an ALTER but not created by:\n{create}"
            );
            assert!(
                REQUIRED_COLUMNS
                    .iter()
                    .any(|(t, cols)| *t == table && cols.contains(&column)),
                "init does not check {table}.{column}"
            );
        }
        assert_eq!(
            added_column("ALTER TABLE ks.t ADD c text"),
            Some(("t", "c"))
        );
        assert_eq!(added_column("alter table t add c bigint"), Some(("t", "c")));
        assert_eq!(added_column("ALTER TABLE t DROP c"), None);
        assert_eq!(added_column("CREATE TABLE t (c text)"), None);
    }

    #[test]
    fn the_keyspace_replaces_keyscore_everywhere_it_names_the_keyspace() {
        for statement in table_statements("ks_test_42") {
            assert!(!statement.contains("keyscore"), "{statement}");
            assert!(statement.contains("ks_test_42."), "{statement}");
        }
        let keyspace = split_statements(KEYSPACE_FILE);
        assert_eq!(keyspace.len(), 1);
        assert_eq!(
            substitute_keyspace(&keyspace[0], "dev"),
            create_keyspace("dev", &replication_map(None).unwrap().0, false)
                .replace(" WITH", "\n  WITH"),
            "the development keyspace file and init's default differ"
        );
    }

    #[test]
    fn replication_is_nts_per_datacenter_or_a_given_map() {
        assert_eq!(
            replication_map(None).unwrap(),
            (
                "{'class': 'SimpleStrategy', 'replication_factor': 1}".to_string(),
                true
            )
        );
        assert_eq!(
            replication_map(Some("dc1=3, dc2=2")).unwrap(),
            (
                "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}".to_string(),
                false
            )
        );
        let map = "{'class': 'NetworkTopologyStrategy', 'eu': 3}";
        assert_eq!(
            replication_map(Some(map)).unwrap(),
            (map.to_string(), false)
        );
        for bad in ["dc1", "dc1=0", "dc1=x", "{'dc1': 3}", "=3"] {
            let err = replication_map(Some(bad)).unwrap_err();
            assert!(err.to_string().contains("--replication"), "{bad}: {err}");
        }
    }

    #[test]
    fn tablets_are_turned_off_only_where_they_refuse_lwt() {
        assert_eq!(scylla_version("6.2.0"), Some((6, 2)));
        assert_eq!(scylla_version("2025.3.1-0.2025"), Some((2025, 3)));
        assert_eq!(scylla_version("5.4.9"), Some((5, 4)));
        assert_eq!(scylla_version("n/a"), None);
        assert!(!refuses_lwt_with_tablets((5, 4)));
        assert!(refuses_lwt_with_tablets((6, 0)));
        assert!(refuses_lwt_with_tablets((2025, 1)));
        assert!(refuses_lwt_with_tablets((2025, 3)));
        assert!(!refuses_lwt_with_tablets((2025, 4)));
        assert!(!refuses_lwt_with_tablets((2026, 1)));
        assert_eq!(
            create_keyspace("k", "{'class': 'NetworkTopologyStrategy', 'dc1': 3}", true),
            "CREATE KEYSPACE IF NOT EXISTS k WITH replication = {'class': \
             'NetworkTopologyStrategy', 'dc1': 3} AND tablets = {'enabled': false}"
        );
    }

    #[test]
    fn substitution_leaves_strings_and_longer_identifiers_alone() {
        assert_eq!(
            substitute_keyspace(
                "INSERT INTO keyscore.t (keyscore_id, v) VALUES ('keyscore', \"keyscore\")",
                "prod"
            ),
            "INSERT INTO prod.t (keyscore_id, v) VALUES ('keyscore', \"keyscore\")"
        );
    }

    #[test]
    fn splitting_drops_comments_and_keeps_quoted_semicolons() {
        let text = "-- header; not a statement\n\
                    CREATE TABLE a (x text); // trailing comment;\n\
                    /* block; comment */ INSERT INTO a (x) VALUES ('a;b''c');\n\
                    \n   ;  \n\
                    SELECT * FROM a WHERE x = $$d;e$$";
        assert_eq!(
            split_statements(text),
            [
                "CREATE TABLE a (x text)",
                "INSERT INTO a (x) VALUES ('a;b''c')",
                "SELECT * FROM a WHERE x = $$d;e$$",
            ]
        );
    }
}
