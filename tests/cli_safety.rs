//! The `keyscore` commands that change what scores, as an operator retries them: `rollback
//! --from`, `promote --from`, `activate --expect-version`, `canary` and `shadow` refusing what
//! would do harm, unknown keys, versions that do not build, and stores that do not exist; exit
//! statuses of `score`, closed pipes, and errors said once, naming what to fix.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use keyscore::store::{AutoCriteria, Canary, EmbeddedModelStore, ModelStore, Verdict};

const BIN: &str = env!("CARGO_BIN_EXE_keyscore");

fn run(dir: &Path, store_url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store_url)
        .args(args)
        .current_dir(dir)
        .env_remove("KEYSCORE_CONFIG")
        .env_remove("KEYSCORE_STORE")
        .env("KEYSCORE_LOG", "warn")
        .output()
        .expect("keyscore runs")
}

fn keyscore(store: &Path, args: &[&str]) -> Output {
    run(
        store.parent().unwrap(),
        &format!("sqlite://{}", store.display()),
        args,
    )
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "keyscore failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The stderr of a command that must fail.
fn refused(out: Output) -> String {
    assert!(
        !out.status.success(),
        "keyscore succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A linear spec over two features whose intercept tells the versions apart.
fn linear_spec(intercept: usize) -> String {
    serde_json::json!({
        "format_version": 1,
        "features": ["a", "b"],
        "model": {"kind": "linear", "coefficients": [1.0, 2.0], "intercept": intercept},
        "output": {"type": "regression"}
    })
    .to_string()
}

/// A store where `paris` has v1..=`versions` stored and v1 active.
fn store_with_paris(dir: &Path, versions: usize) -> PathBuf {
    let store = dir.join("models.db");
    ok(keyscore(&store, &["init"]));
    for v in 1..=versions {
        let file = dir.join(format!("v{v}.json"));
        std::fs::write(&file, linear_spec(v)).unwrap();
        ok(keyscore(
            &store,
            &["upload", "--key", "paris", file.to_str().unwrap()],
        ));
    }
    ok(keyscore(
        &store,
        &["activate", "--key", "paris", "--version", "1"],
    ));
    store
}

/// The active version `show` reports.
fn active(store: &Path) -> String {
    let show = ok(keyscore(store, &["show", "--key", "paris"]));
    show.lines()
        .find_map(|l| l.strip_prefix("version:"))
        .unwrap_or_else(|| panic!("no version line in\n{show}"))
        .trim()
        .to_string()
}

#[test]
fn rollback_from_is_a_no_op_on_retry_and_refuses_another_active_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 3);
    ok(keyscore(
        &store,
        &["activate", "--key", "paris", "--version", "2"],
    ));
    let out = ok(keyscore(
        &store,
        &["rollback", "--key", "paris", "--from", "2"],
    ));
    assert_eq!(out.trim(), "rolled back paris from v2 to v1");
    assert_eq!(active(&store), "1");
    let out = ok(keyscore(
        &store,
        &["rollback", "--key", "paris", "--from", "2"],
    ));
    assert_eq!(
        out.trim(),
        "paris already rolled back from v2 to v1; nothing changed"
    );
    assert_eq!(active(&store), "1", "a retried rollback moved the pointer");
    let err = refused(keyscore(
        &store,
        &["rollback", "--key", "paris", "--from", "3"],
    ));
    assert!(
        err.contains("paris's active version is v1, not v3; nothing changed"),
        "{err}"
    );
    assert_eq!(active(&store), "1");

    // The plain rollback keeps working and says how to make it safe to retry.
    let plain = keyscore(&store, &["rollback", "--key", "paris"]);
    let hint = String::from_utf8_lossy(&plain.stderr).into_owned();
    assert_eq!(ok(plain).trim(), "rolled back paris to v2");
    assert!(
        hint.contains("--from N") && hint.contains("retry"),
        "{hint}"
    );
}

#[test]
fn activate_says_when_nothing_changed_and_checks_the_expected_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 3);
    let out = ok(keyscore(
        &store,
        &["activate", "--key", "paris", "--version", "1"],
    ));
    assert_eq!(out.trim(), "paris v1 is already active; nothing changed");
    let err = refused(keyscore(
        &store,
        &[
            "activate",
            "--key",
            "paris",
            "--version",
            "3",
            "--expect-version",
            "2",
        ],
    ));
    assert!(
        err.contains("paris's active version is v1, not v2"),
        "{err}"
    );
    assert_eq!(active(&store), "1");
    let out = ok(keyscore(
        &store,
        &[
            "activate",
            "--key",
            "paris",
            "--version",
            "3",
            "--expect-version",
            "1",
        ],
    ));
    assert_eq!(out.trim(), "activated paris v3 (was v1)");
    // A retry of the same activation: the version is active, nothing changes.
    let out = ok(keyscore(
        &store,
        &[
            "activate",
            "--key",
            "paris",
            "--version",
            "3",
            "--expect-version",
            "1",
        ],
    ));
    assert_eq!(out.trim(), "paris v3 is already active; nothing changed");
}

#[test]
fn canary_refuses_a_second_canary_and_the_active_version_and_promote_from_is_retry_safe() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 3);
    let canary = |version: &str, extra: &[&str]| {
        let mut args = vec!["canary", "--key", "paris", "--version", version];
        args.extend_from_slice(&["--share", "0.1"]);
        args.extend_from_slice(extra);
        keyscore(&store, &args)
    };
    let err = refused(canary("1", &[]));
    assert!(err.contains("paris v1 is the active version"), "{err}");
    let err = refused(canary("2", &["--expect-version", "3"]));
    assert!(
        err.contains("paris's active version is v1, not v3"),
        "{err}"
    );
    ok(canary("3", &["--expect-version", "1"]));
    let again = ok(canary("3", &[]));
    assert!(again.contains("already runs; nothing changed"), "{again}");
    let err = refused(canary("2", &[]));
    assert!(
        err.contains("paris already runs a canary of v3 on 10% of its records")
            && err.contains("--replace"),
        "{err}"
    );
    let out = ok(canary("2", &["--replace"]));
    assert!(
        out.starts_with("replaced the canary of paris v3 on 10%\ncanary paris v2 on 10%"),
        "{out}"
    );

    // Promote from v1: the canary's v2 replaces it; a retry says it is done.
    let out = ok(keyscore(
        &store,
        &["promote", "--key", "paris", "--from", "1"],
    ));
    assert_eq!(
        out.trim(),
        "promoted paris v2: it replaced v1 and the canary ended"
    );
    let out = ok(keyscore(
        &store,
        &["promote", "--key", "paris", "--from", "1"],
    ));
    assert_eq!(
        out.trim(),
        "paris already promoted from v1 to v2; nothing changed"
    );
    assert_eq!(active(&store), "2");

    // A canary ended with rollback --from its version; the active version stays.
    ok(canary("3", &[]));
    let out = ok(keyscore(
        &store,
        &["rollback", "--key", "paris", "--from", "3"],
    ));
    assert!(out.contains("ended the canary of paris v3"), "{out}");
    assert_eq!(active(&store), "2");
    // Its retry finds the canary ended (the key's history says so) and changes nothing.
    let again = ok(keyscore(
        &store,
        &["rollback", "--key", "paris", "--from", "3"],
    ));
    assert_eq!(
        again.trim(),
        "the canary of paris v3 already ended; nothing changed"
    );
    assert_eq!(active(&store), "2");
    // With a canary running, rolling back from the active version is refused.
    ok(canary("3", &[]));
    let err = refused(keyscore(
        &store,
        &["rollback", "--key", "paris", "--from", "2"],
    ));
    assert!(
        err.contains("paris runs a canary of v3") && err.contains("nothing changed"),
        "{err}"
    );
    assert_eq!(active(&store), "2");
}

#[test]
fn unknown_keys_are_refused_by_name_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 1);
    for args in [
        &["rollback", "--key", "nosuch"][..],
        &["rollback", "--key", "nosuch", "--from", "1"],
        &["shadow", "--key", "nosuch", "--clear"],
        &["shadow", "--key", "nosuch", "--version", "1"],
        &[
            "canary",
            "--key",
            "nosuch",
            "--version",
            "1",
            "--share",
            "0.5",
        ],
        &["promote", "--key", "nosuch"],
        &["activate", "--key", "nosuch", "--version", "1"],
    ] {
        let err = refused(keyscore(&store, args));
        assert!(err.contains("unknown key 'nosuch'"), "{args:?}: {err}");
    }
    let list = ok(keyscore(&store, &["list"]));
    assert!(!list.contains("nosuch"), "{list}");
    let out = ok(keyscore(&store, &["shadow", "--key", "paris", "--clear"]));
    assert_eq!(out.trim(), "paris has no shadow; nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_does_not_build_is_never_made_to_score() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 1);
    // A version planted without the upload checks, as a hand-written insert could.
    let direct = EmbeddedModelStore::open(&store).unwrap();
    let bad = r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0,2.0,3.0],"intercept":0.0},"output":{"type":"regression"}}"#;
    direct.insert_version("paris", Some(2), bad).await.unwrap();
    drop(direct);
    for args in [
        &["activate", "--key", "paris", "--version", "2"][..],
        &[
            "canary",
            "--key",
            "paris",
            "--version",
            "2",
            "--share",
            "0.5",
        ],
        &["shadow", "--key", "paris", "--version", "2"],
    ] {
        let err = refused(keyscore(&store, args));
        assert!(
            err.contains("paris v2 does not build") && err.contains("coefficients"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(active(&store), "1");
    let show = ok(keyscore(
        &store,
        &["show", "--key", "paris", "--version", "2"],
    ));
    assert!(
        show.contains("does not build") && show.contains("coefficients"),
        "{show}"
    );
    let list = ok(keyscore(&store, &["list", "--check"]));
    assert!(
        list.contains(" v1 v2!\n    paris v2 does not build: invalid model: coefficients"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(ok(keyscore(&store, &["list", "--check", "--json"])).trim()).unwrap();
    assert!(
        json["refused"]["2"]
            .as_str()
            .unwrap()
            .contains("coefficients"),
        "{json}"
    );
    assert!(json["refused"].get("1").is_none(), "{json}");
}

#[test]
fn only_init_creates_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("model.db");
    for args in [
        &["list"][..],
        &["score"],
        &["show", "--key", "paris"],
        &["rollback", "--key", "paris"],
    ] {
        let err = refused(keyscore(&missing, args));
        assert!(
            err.contains(&format!("no model store at '{}'", missing.display()))
                && err.contains(&format!(
                    "keyscore init --store sqlite://{}",
                    missing.display()
                )),
            "{args:?}: {err}"
        );
        assert!(!missing.exists(), "{args:?} created the store");
    }
    ok(keyscore(&missing, &["init"]));
    assert!(missing.exists());
    ok(keyscore(&missing, &["list"]));
}

#[test]
fn a_sqlite_url_without_its_slashes_is_refused_with_the_form_to_use() {
    let dir = tempfile::tempdir().unwrap();
    for (url, form) in [
        ("sqlite:x2.db", "write sqlite://x2.db"),
        ("sqlite:/x.db", "write sqlite:///x.db"),
    ] {
        for args in [&["init"][..], &["list"]] {
            let err = refused(run(dir.path(), url, args));
            assert!(
                err.contains(&format!("'{url}' is not a store URL")) && err.contains(form),
                "{url} {args:?}: {err}"
            );
        }
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files were created: {left:?}");
}

#[test]
fn score_exit_status_says_when_too_much_was_dead_lettered_or_nothing_scored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models.db");
    ok(keyscore(&store, &["init"]));
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, linear_spec(1)).unwrap();
    ok(keyscore(
        &store,
        &[
            "upload",
            "--key",
            "paris",
            "--activate",
            spec.to_str().unwrap(),
        ],
    ));
    // 8 records of paris, 2 not JSON: 20% dead letters.
    let mut lines: Vec<String> = (0..8)
        .map(|i| format!(r#"{{"id":"r{i}","city":"paris","a":1,"b":2}}"#))
        .collect();
    lines.extend(["not json".to_string(), "{".to_string()]);
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let input = input.to_str().unwrap();
    let score = |extra: &[&str]| {
        let mut args = vec!["score", "--input", input, "--output", "-"];
        args.extend_from_slice(&["--dead-letters", "/dev/null"]);
        args.extend_from_slice(extra);
        keyscore(&store, &args)
    };
    let out = score(&["--max-dead-letter-ratio", "0.2"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 8);
    let out = score(&["--max-dead-letter-ratio", "0.1"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 of 10 records are dead letters (20.00%), over --max-dead-letter-ratio 0.1"),
        "{err}"
    );
    // Every record is still written before the verdict.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 8);
    let err = refused(score(&["--max-dead-letter-ratio", "2"]));
    assert!(err.contains("not a ratio"), "{err}");

    // No model for the key (no fallback either): every record a dead letter.
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, r#"{"id":"x","city":"rome","a":1,"b":2}"#).unwrap();
    let out = keyscore(
        &store,
        &[
            "score",
            "--input",
            other.to_str().unwrap(),
            "--dead-letters",
            "/dev/null",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("nothing scored: all 1 records read are dead letters"),
        "{out:?}"
    );
    let help = ok(keyscore(&store, &["score", "--help"]));
    assert!(
        help.contains("Exit status") && help.contains("4 records read but none scored"),
        "{help}"
    );
}

/// Runs `args` with stdout to a pipe the test closes after the first line, as `| head -1`
/// does, and returns the status and stderr.
fn first_line_then_close(store: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(format!("sqlite://{}", store.display()))
        .args(args)
        .env_remove("KEYSCORE_CONFIG")
        .env("KEYSCORE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(!line.is_empty());
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn list_and_score_end_quietly_when_their_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models.db");
    ok(keyscore(&store, &["init"]));
    // Far more output than a pipe holds (64 KiB), so the writer meets the closed pipe.
    let keys = 20_000;
    let mut jsonl = String::new();
    for i in 0..keys {
        jsonl.push_str(&format!(
            r#"{{"key":"key-with-a-longer-name-{i:06}","spec":{}}}"#,
            linear_spec(i)
        ));
        jsonl.push('\n');
    }
    let file = dir.path().join("specs.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    ok(keyscore(
        &store,
        &["upload", "--jsonl", file.to_str().unwrap(), "--activate"],
    ));
    let (status, stderr) = first_line_then_close(&store, &["list", "--all"]);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    let records: String = (0..keys)
        .map(|i| {
            format!(
                "{{\"id\":\"r{i}\",\"city\":\"key-with-a-longer-name-{i:06}\",\"a\":1,\"b\":2}}\n"
            )
        })
        .collect();
    let input = dir.path().join("records.jsonl");
    std::fs::write(&input, records).unwrap();
    let (status, stderr) =
        first_line_then_close(&store, &["score", "--input", input.to_str().unwrap()]);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// The one `error:` line of a failed command's stderr.
fn error_line(out: Output) -> String {
    let err = refused(out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected in:\n{err}");
    lines[0].to_string()
}

#[test]
fn errors_are_said_once_and_name_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models.db");
    ok(keyscore(&store, &["init"]));
    let upload = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        keyscore(
            &store,
            &["upload", "--key", "paris", file.to_str().unwrap()],
        )
    };
    let line = error_line(upload(
        "short.json",
        r#"{"format_version":1,"features":["a","b","c"],"model":{"kind":"linear","coefficients":[1.0,2.0],"intercept":0.5},"output":{"type":"regression"}}"#,
    ));
    assert_eq!(
        line,
        "error: model refused: invalid model: coefficients has 2 entries but the model has 3 features"
    );
    let line = error_line(upload(
        "nan.json",
        r#"{"format_version":1,"features":["a","b"],"model":{"kind":"linear","coefficients":[1.0,NaN],"intercept":0.5},"output":{"type":"regression"}}"#,
    ));
    assert!(
        line.contains("NaN at line 1 column 87, in model.coefficients[1]: JSON has no NaN"),
        "{line}"
    );

    let with_config = |config: &str, env: &[(&str, &str)]| {
        let file = dir.path().join("keyscore.toml");
        std::fs::write(&file, config).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&file)
            .arg("--store")
            .arg(format!("sqlite://{}", store.display()))
            .arg("list")
            .env_remove("KEYSCORE_STORE")
            .env("KEYSCORE_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        (cmd.output().unwrap(), file.display().to_string())
    };
    let (out, file) = with_config("[store]\nrefresh_interval_ms = \"200\"\n", &[]);
    assert_eq!(
        error_line(out),
        format!(
            "error: invalid configuration in {file}: [store] refresh_interval_ms: invalid type: \
             string \"200\", expected u64"
        )
    );
    let (out, _) = with_config("", &[("KEYSCORE__STORE__REFRESH_INTERVAL_MS", "abc")]);
    assert_eq!(
        error_line(out),
        "error: invalid configuration in environment variable \
         KEYSCORE__STORE__REFRESH_INTERVAL_MS: [store] refresh_interval_ms: invalid type: \
         string \"abc\", expected u64"
    );
    let (out, _) = with_config("[records]\nkey_field = \"\"\n", &[]);
    assert!(error_line(out)
        .contains("[records] key_field: must name the JSON field holding the model key"),);
    let missing = dir.path().join("nosuch.toml");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&missing)
        .arg("list")
        .output()
        .unwrap();
    let line = error_line(out);
    assert_eq!(line.matches("No such file").count(), 1, "{line}");
    assert!(line.contains("nosuch.toml"), "{line}");

    // A driver error that repeats its cause in its own message is said once.
    let out = run(dir.path(), "cql://127.0.0.1:1/keyscore", &["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Logs to a pipe carry no colour codes.
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let line = error_line(out);
    assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
}

#[test]
fn a_subcommands_help_keeps_its_own_options_apart_from_the_global_ones() {
    let out = Command::new(BIN)
        .args(["rollback", "--help"])
        .output()
        .unwrap();
    let help = ok(out);
    let (own, global) = help
        .split_once("Global options:")
        .unwrap_or_else(|| panic!("no global heading in\n{help}"));
    assert!(
        own.contains("--from <N>") && !own.contains("--store"),
        "{help}"
    );
    assert!(
        global.contains("--store") && !global.contains("--from"),
        "{help}"
    );
}

#[test]
fn show_and_list_say_it_all_as_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 3);
    ok(keyscore(
        &store,
        &["activate", "--key", "paris", "--version", "2"],
    ));
    ok(keyscore(
        &store,
        &[
            "canary",
            "--key",
            "paris",
            "--version",
            "3",
            "--share",
            "0.25",
        ],
    ));
    ok(keyscore(
        &store,
        &["shadow", "--key", "paris", "--version", "1"],
    ));
    let show = ok(keyscore(&store, &["show", "--key", "paris"]));
    for want in [
        "version:   2\n",
        "active:    v2 (rollback returns to v1)\n",
        "canary:    v3 on 25% of records\n",
        "shadow:    v1\n",
        "builds:    yes\n",
    ] {
        assert!(show.contains(want), "{want:?} missing from\n{show}");
    }
    let activated = show
        .lines()
        .find_map(|l| l.strip_prefix("activated: "))
        .unwrap_or_else(|| panic!("no activated line in\n{show}"));
    assert!(
        activated.contains('T') && activated.contains("Z by keyscore"),
        "{activated}"
    );

    let json: serde_json::Value = serde_json::from_str(&ok(keyscore(
        &store,
        &["show", "--key", "paris", "--format", "json"],
    )))
    .unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(json["active"], 2);
    assert_eq!(json["previous"], 1);
    assert_eq!(json["canary"]["version"], 3);
    assert_eq!(json["canary"]["share"], 0.25);
    assert_eq!(json["shadow"], 1);
    assert_eq!(json["builds"], true);
    assert!(json["activated_by"]
        .as_str()
        .unwrap()
        .starts_with("keyscore"));
    assert_eq!(json["spec"]["model"]["intercept"], 2);
    // The stored spec alone, as before.
    let spec = ok(keyscore(&store, &["show", "--key", "paris", "--json"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&spec).unwrap(),
        json["spec"]
    );

    let list = ok(keyscore(&store, &["list", "--json"]));
    let rows: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![serde_json::json!({"key": "paris", "active": 2, "versions": [1, 2, 3]})]
    );
}

#[test]
fn uploading_the_latest_spec_again_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 2);
    // v2.json holds the latest version's spec, written with other whitespace.
    let same = dir.path().join("same.json");
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&linear_spec(2)).unwrap(),
    )
    .unwrap();
    std::fs::write(&same, pretty).unwrap();
    let out = keyscore(
        &store,
        &["upload", "--key", "paris", same.to_str().unwrap()],
    );
    let note = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ok(out).contains("uploaded paris v3"));
    assert!(
        note.contains("note: the spec is identical to paris v2; v3 is a copy of it"),
        "{note}"
    );
    let other = dir.path().join("v1.json");
    let out = keyscore(
        &store,
        &["upload", "--key", "paris", other.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{out:?}");
    ok(out);
}

#[test]
fn the_operations_address_is_said_without_verbose_logs() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 1);
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = keyscore(
        &store,
        &[
            "score",
            "--input",
            empty.to_str().unwrap(),
            "--ops-listen",
            "127.0.0.1:0",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    let port: u16 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("operations endpoint listening on http://127.0.0.1:"))
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {stderr}"));
    assert_ne!(port, 0);
}

#[test]
fn a_cql_address_that_never_answers_fails_with_keyscores_message() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections (the kernel completes them) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("cql://{}/keyscore", silent.local_addr().unwrap());
    let out = Command::new(BIN)
        .args(["--store", &url, "list"])
        .current_dir(dir.path())
        .env_remove("KEYSCORE_CONFIG")
        .env_remove("KEYSCORE_LOG")
        .env("KEYSCORE__STORE__CQL__CONNECT_TIMEOUT_MS", "300")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert_eq!(
        err.trim(),
        format!(
            "error: opening the model store {url}: store unavailable: no answer from {url} \
             within 300 ms: the address accepts connections but no CQL node answered; check \
             the host and port (9042 for CQL), or raise [store.cql] connect_timeout_ms"
        ),
        "only keyscore's message, no driver logs"
    );
    drop(silent);
}

#[test]
fn validate_checks_without_a_store_and_predict_scores_a_version_before_it_is_active() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, linear_spec(5)).unwrap();
    // No store anywhere: validate needs none.
    let out = run(
        dir.path(),
        "sqlite://nosuch.db",
        &["validate", spec.to_str().unwrap()],
    );
    let text = ok(out);
    assert!(
        text.starts_with("valid: linear model, 2 features (a, b), regression; checksum"),
        "{text}"
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"format_version":1,"features":["a"],"model":{"kind":"linear","coefficients":[1.0,2.0],"intercept":0},"output":{"type":"regression"}}"#,
    )
    .unwrap();
    let line = error_line(run(
        dir.path(),
        "sqlite://nosuch.db",
        &["validate", bad.to_str().unwrap()],
    ));
    assert!(line.contains("coefficients has 2 entries"), "{line}");
    assert!(!dir.path().join("nosuch.db").exists());

    let store = store_with_paris(dir.path(), 2);
    let record = r#"{"id":"x","city":"paris","a":1,"b":2}"#;
    let predict = |extra: &[&str]| {
        let mut args = vec!["predict", "--key", "paris", "--record", record];
        args.extend_from_slice(extra);
        serde_json::from_str::<serde_json::Value>(&ok(keyscore(&store, &args))).unwrap()
    };
    // v1 (intercept 1) is active; v2 (intercept 2) is not.
    let current = predict(&[]);
    assert_eq!(current["model_version"], 1);
    assert_eq!(current["prediction"]["value"], 6.0);
    let candidate = predict(&["--version", "2"]);
    assert_eq!(candidate["model_version"], 2);
    assert_eq!(candidate["prediction"]["value"], 7.0);
    assert_eq!(active(&store), "1", "predict changed nothing");
    let line = error_line(keyscore(
        &store,
        &["predict", "--key", "paris", "--record", r#"{"a":1}"#],
    ));
    assert!(
        line.contains("feature 'b' is missing from --record"),
        "{line}"
    );
}

#[test]
fn demo_outside_the_repository_runs_on_its_built_in_seed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--seconds", "0"])
        .current_dir(dir.path())
        .env_remove("KEYSCORE_CONFIG")
        .env_remove("KEYSCORE_STORE")
        .output()
        .unwrap();
    let text = ok(out);
    assert!(
        text.contains("  paris "),
        "the summary names the seed's keys: {text}"
    );
    // Every seed record is scored, as from the repository's seed directory.
    let records =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("seed/records.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
    assert!(text.contains(&format!("records: {records} in")), "{text}");
    assert!(dir.path().join("keyscore-demo.db").exists());
}

#[test]
fn demo_says_when_the_stream_outran_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let out = Command::new(BIN)
        .args(["demo", "--records", "2000", "--seconds", "0", "--db"])
        .arg(&db)
        .arg("--seed-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("seed"))
        .current_dir(dir.path())
        .env_remove("KEYSCORE_CONFIG")
        .env_remove("KEYSCORE_STORE")
        // The watcher does not poll during the run: the swap cannot land before it ends.
        .env("KEYSCORE__STORE__REFRESH_INTERVAL_MS", "3600000")
        .output()
        .unwrap();
    let text = ok(out);
    let swap = text
        .lines()
        .find(|l| l.starts_with("swap:"))
        .unwrap_or_else(|| panic!("no swap line in\n{text}"));
    assert!(
        swap.contains("the stream ended before the watcher's next poll, so the")
            && swap.contains("later records of paris were scored by the old version"),
        "{swap}"
    );
}

/// An automatic verdict's evidence is in `history --format json` as the object written, and
/// in the text as a short note; `show` says a canary is automatic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_show_tell_an_automatic_verdict_and_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 2);
    let direct = EmbeddedModelStore::open(&store).unwrap();
    let canary = Canary {
        version: 2,
        share: 0.25,
        auto: Some(AutoCriteria {
            min_labelled: 200,
            metric: "rmse".into(),
            margin: 0.1,
            max_dead_letter_rate: 0.02,
            max_prediction_psi: 0.2,
        }),
    };
    direct.set_canary("paris", Some(canary)).await.unwrap();
    let show = ok(keyscore(
        &store,
        &[
            "show",
            "--key",
            "paris",
            "--version",
            "2",
            "--format",
            "json",
        ],
    ));
    let doc: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(doc["canary"]["auto"]["metric"], "rmse", "{show}");
    let show = ok(keyscore(
        &store,
        &["show", "--key", "paris", "--version", "2"],
    ));
    assert!(show.contains("decided automatically on rmse"), "{show}");
    let evidence = r#"{"labelled":250,"rmse":{"canary":0.5,"active":0.55}}"#;
    direct
        .decide_canary("paris", 2, Verdict::Promote, evidence)
        .await
        .unwrap();
    drop(direct);

    let json = ok(keyscore(
        &store,
        &["history", "--key", "paris", "--format", "json"],
    ));
    let docs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let promoted = docs
        .iter()
        .find(|d| d["action"] == "promote")
        .expect("a promote row");
    assert_eq!(
        promoted["evidence"],
        serde_json::from_str::<serde_json::Value>(evidence).unwrap()
    );
    assert!(
        docs.iter()
            .filter(|d| d["action"] == "activate")
            .all(|d| d["evidence"].is_null()),
        "{json}"
    );
    let text = ok(keyscore(&store, &["history", "--key", "paris"]));
    assert!(
        text.lines()
            .any(|l| l.contains("promoted v2 (was v1) (automatic: {\"labelled\":250")),
        "{text}"
    );
}

#[test]
fn history_lists_every_change_newest_first_with_who_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_paris(dir.path(), 3);
    ok(keyscore(
        &store,
        &["activate", "--key", "paris", "--version", "2"],
    ));
    ok(keyscore(
        &store,
        &["rollback", "--key", "paris", "--from", "2"],
    ));
    ok(keyscore(
        &store,
        &[
            "canary",
            "--key",
            "paris",
            "--version",
            "3",
            "--share",
            "0.5",
        ],
    ));
    ok(keyscore(
        &store,
        &["promote", "--key", "paris", "--from", "1"],
    ));
    ok(keyscore(
        &store,
        &["shadow", "--key", "paris", "--version", "2"],
    ));
    ok(keyscore(&store, &["shadow", "--key", "paris", "--clear"]));
    // A retried command that changes nothing adds nothing.
    ok(keyscore(&store, &["shadow", "--key", "paris", "--clear"]));

    let text = ok(keyscore(&store, &["history", "--key", "paris"]));
    let described: Vec<&str> = text
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .nth(1)
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        described,
        [
            "shadow v2 ended",
            "shadow v2",
            "canary v3 ended",
            "promoted v3 (was v1)",
            "canary v3 on 50%",
            "rolled back to v1 (was v2)",
            "activated v2 (was v1)",
            "activated v1",
        ],
        "{text}"
    );
    for line in text.lines() {
        assert!(
            line.starts_with("20") && line.contains("keyscore"),
            "{line}"
        );
    }

    let json = ok(keyscore(
        &store,
        &[
            "history", "--key", "paris", "--limit", "2", "--format", "json",
        ],
    ));
    let docs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{json}");
    assert_eq!(docs[0]["action"], "shadow_end");
    assert_eq!(docs[0]["version"], 2);
    assert_eq!(docs[1]["action"], "shadow");

    let err = refused(keyscore(&store, &["history", "--key", "nosuch"]));
    assert!(err.contains("nosuch"), "{err}");
}
