//! The CQL schema: the numbered files of `cql/`, embedded in the binary and applied in order
//! with the store's keyspace in place of `keyscore`.

/// The schema files, in the order `init` applies them.
const SCHEMA_FILES: [(&str, &str); 5] = [
    (
        "001_keyspace.cql",
        include_str!("../../../cql/001_keyspace.cql"),
    ),
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
];

/// The keyspace name the schema files are written with.
const FILE_KEYSPACE: &str = "keyscore";

/// Every schema statement for `keyspace`, in order.
pub(crate) fn schema_statements(keyspace: &str) -> Vec<String> {
    SCHEMA_FILES
        .iter()
        .flat_map(|(_, text)| split_statements(text))
        .map(|statement| substitute_keyspace(&statement, keyspace))
        .collect()
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
    fn the_schema_has_one_statement_per_object_in_file_order() {
        let statements = schema_statements("keyscore");
        assert_eq!(statements.len(), 5, "{statements:#?}");
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS keyscore"));
        assert!(statements[1].starts_with("CREATE TABLE IF NOT EXISTS keyscore.model_versions"));
        assert!(statements[2].starts_with("CREATE TABLE IF NOT EXISTS keyscore.active_models"));
        assert!(statements[3].starts_with("CREATE TABLE IF NOT EXISTS keyscore.model_changes"));
        assert!(statements[4].starts_with("CREATE TABLE IF NOT EXISTS keyscore.model_rollouts"));
        for statement in &statements {
            assert!(!statement.contains("--"), "comment left in {statement}");
            assert!(!statement.ends_with(';'), "{statement}");
        }
    }

    #[test]
    fn the_keyspace_replaces_keyscore_everywhere_it_names_the_keyspace() {
        let statements = schema_statements("ks_test_42");
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ks_test_42\n"));
        assert!(statements[0].contains("'replication_factor': 1"));
        assert!(statements[1].contains("ks_test_42.model_versions ("));
        assert!(statements[2].contains("ks_test_42.active_models ("));
        assert!(statements[3].contains("ks_test_42.model_changes ("));
        assert!(statements[4].contains("ks_test_42.model_rollouts ("));
        for statement in &statements {
            assert!(!statement.contains("keyscore"), "{statement}");
        }
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
