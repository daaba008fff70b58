//! The status page in a real browser: headless Chromium loads `/` from a running
//! `keyscore score --ops-listen`, and the page shows the seed keys and follows an activation.
//!
//! Needs Chromium (`chromium` on PATH, or `KEYSCORE_CHROMIUM`); `tests/run-all.sh` installs
//! it. Without it the test fails.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use keyscore::store::{Canary, EmbeddedModelStore, ModelStore};

fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("KEYSCORE_CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap();
        if found.status.success() {
            return PathBuf::from(String::from_utf8(found.stdout).unwrap().trim());
        }
    }
    panic!(
        "Chromium is needed for the status page test: install it (Debian: apt-get install -y \
         chromium; tests/run-all.sh does) or set KEYSCORE_CHROMIUM"
    );
}

/// The page's DOM after its scripts ran and polled the server at least once.
fn dump_dom(url: &str, profile: &Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running Chromium");
    assert!(
        out.status.success(),
        "Chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The text of the `served` cell of the row of `key`, if the page shows it.
fn served_cell(dom: &str, key: &str) -> Option<String> {
    let row_start = dom.find(&format!("<tr data-key=\"{key}\">"))?;
    let row = &dom[row_start..row_start + dom[row_start..].find("</tr>")?];
    let cell = row.find("served\">")? + "served\">".len();
    Some(row[cell..cell + row[cell..].find('<')?].to_string())
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

struct Score {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Score {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_seed_keys_and_follows_an_activation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("models.db");
    let store = EmbeddedModelStore::open(&db).unwrap();
    let mut keys = Vec::new();
    for entry in std::fs::read_dir("seed/models").unwrap() {
        let entry = entry.unwrap();
        let key = entry.file_name().to_string_lossy().into_owned();
        let spec = std::fs::read_to_string(entry.path().join("v1.json")).unwrap();
        store.put_version(&key, Some(1), &spec).await.unwrap();
        store.activate(&key, 1).await.unwrap();
        keys.push(key);
    }
    let v2 = std::fs::read_to_string("seed/models/paris/v2.json").unwrap();
    store.put_version("paris", Some(2), &v2).await.unwrap();

    let log = dir.path().join("score.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .args([
            "--log-format",
            "json",
            "score",
            "--ops-listen",
            "127.0.0.1:0",
        ])
        .args(["--batch", "1"])
        .env("KEYSCORE_STORE", format!("sqlite://{}", db.display()))
        .env("KEYSCORE__STORE__REFRESH_INTERVAL_MS", "200")
        .env("KEYSCORE__OPS__STORE_SCAN_INTERVAL_MS", "200")
        .env("KEYSCORE_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let mut score = Score { child, stdin };
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(at) = text.find("\"addr\":\"") {
            let rest = &text[at + 8..];
            break rest[..rest.find('"').unwrap()].to_string();
        }
        assert!(
            score.child.try_wait().unwrap().is_none(),
            "score exited:\n{text}"
        );
        assert!(Instant::now() < deadline, "no operations address:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The first records of the seed file, so paris is served.
    let records = std::fs::read_to_string("seed/records.jsonl").unwrap();
    let stdin = score.stdin.as_mut().unwrap();
    for line in records.lines().filter(|l| l.contains("\"paris\"")).take(20) {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    let wait_for = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = get(&addr, "/status.json");
            if ok(&body) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}:\n{body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("paris scored by v1", &|b| {
        b.contains(r#""key":"paris""#) && b.contains(r#""served_version":1"#)
    });

    let url = format!("http://{addr}/");
    let dom = dump_dom(&url, &dir.path().join("profile-1"));
    for key in &keys {
        assert!(
            dom.contains(&format!("<tr data-key=\"{key}\">")),
            "the page does not show {key}:\n{dom}"
        );
    }
    assert_eq!(served_cell(&dom, "paris").as_deref(), Some("1"), "{dom}");
    assert!(dom.contains("ready"), "{dom}");

    let activated = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .args(["activate", "--key", "paris", "--version", "2"])
        .env("KEYSCORE_STORE", format!("sqlite://{}", db.display()))
        .status()
        .unwrap();
    assert!(activated.success());
    wait_for("paris swapped to v2", &|b| b.contains(r#""to":2"#));
    let dom = dump_dom(&url, &dir.path().join("profile-2"));
    assert_eq!(served_cell(&dom, "paris").as_deref(), Some("2"), "{dom}");
    assert!(dom.contains("v1 → v2"), "the page shows no swap:\n{dom}");

    // A canary, a version that does not build, a dead letter with its record id.
    store
        .set_canary(
            "paris",
            Some(Canary {
                version: 1,
                share: 0.5,
                auto: None,
            }),
        )
        .await
        .unwrap();
    let mut london: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("seed/models/london/v1.json").unwrap())
            .unwrap();
    // Coefficients of the wrong shape: stored (as a hand-written insert could), never built.
    london["model"]["coefficients"] = serde_json::json!(1.0);
    store
        .insert_version("london", Some(2), &london.to_string())
        .await
        .unwrap();
    let stdin = score.stdin.as_mut().unwrap();
    for line in records.lines().filter(|l| l.contains("\"london\"")).take(5) {
        writeln!(stdin, "{line}").unwrap();
    }
    // Paris records whose distances moved far past training's: its live quality flags drift.
    for line in records
        .lines()
        .filter(|l| l.contains("\"paris\""))
        .skip(20)
        .take(30)
    {
        let mut r: serde_json::Value = serde_json::from_str(line).unwrap();
        r["distance_km"] = serde_json::json!(r["distance_km"].as_f64().unwrap() * 40.0 + 100.0);
        writeln!(stdin, "{r}").unwrap();
    }
    writeln!(stdin, r#"{{"id": "bad-1", "city": "paris"}}"#).unwrap();
    stdin.flush().unwrap();
    wait_for("london served and a dead letter noted", &|b| {
        b.contains(r#""key":"london""#) && b.contains(r#""record":"\"bad-1\"""#)
    });
    store.activate("london", 2).await.unwrap();
    wait_for("london v2 refused and paris's canary seen", &|b| {
        b.contains(r#""refused_version":2"#) && b.contains(r#""canary":{"share":0.5"#)
    });
    wait_for("two chart points", &|b| {
        b.matches(r#""records_per_s""#).count() > keys.len() + 1
    });
    let dom = dump_dom(&url, &dir.path().join("profile-3"));
    let paris = row_of(&dom, "paris").expect("a paris row");
    assert_eq!(
        paris.matches("<td").count(),
        12,
        "one cell per column, the canary's badge inside its cell: {paris}"
    );
    assert!(
        paris.contains(r#"<span class="tag canary">v1 on 50.0% · "#),
        "{paris}"
    );
    // The live quality cell: a line per version and arm, v2's flagged as drifting.
    let drifting = paris
        .find(r#"<div class="bad drift" data-version="2" data-arm="active""#)
        .map(|at| &paris[at..at + paris[at..].find("</div>").unwrap()]);
    let drifting = drifting.unwrap_or_else(|| panic!("paris v2 flagged as drifting: {paris}"));
    assert!(
        drifting.contains("v2 active: no labels yet") && drifting.contains("PSI "),
        "{drifting}"
    );
    let london_row = row_of(&dom, "london").expect("a london row");
    assert!(
        london_row.contains("v2 refused: model spec is not valid"),
        "the reason a version was refused: {london_row}"
    );
    let fallback = row_of(&dom, "_default").expect("a _default row");
    assert!(
        fallback.contains("fallback: scores the records of keys without a model"),
        "{fallback}"
    );
    assert!(
        dom.contains("<td>\"bad-1\"</td>"),
        "the dead letter's record id:\n{dom}"
    );
    for chart in ["chart-throughput", "chart-latency"] {
        let at = dom.find(&format!("id=\"{chart}\"")).expect(chart);
        let svg = &dom[at..at + dom[at..].find("</figure>").unwrap()];
        assert!(
            svg.contains("<polyline") && !svg.contains("data-points=\"0\""),
            "{chart} has points: {svg}"
        );
    }
    // Keys in a stable order (by name), and a filter.
    let order: Vec<&str> = dom
        .match_indices("<tr data-key=\"")
        .map(|(at, _)| {
            let rest = &dom[at + 14..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted);
    let dom = dump_dom(&format!("{url}#filter=par"), &dir.path().join("profile-4"));
    assert!(
        row_of(&dom, "paris").is_some() && row_of(&dom, "london").is_none(),
        "{dom}"
    );

    // A screenshot for whoever reads the test's output.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    screenshot(&url, &dir.path().join("profile-5"), &shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    eprintln!("status page screenshot: {}", shot.display());
}

/// The `<tr>` of `key` in a dumped DOM.
fn row_of<'a>(dom: &'a str, key: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<tr data-key=\"{key}\">"))?;
    Some(&dom[start..start + dom[start..].find("</tr>")?])
}

/// A PNG of the page at `url` after its scripts ran.
fn screenshot(url: &str, profile: &Path, to: &Path) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=3000",
            &format!("--screenshot={}", to.display()),
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running Chromium");
    assert!(
        out.status.success() && to.exists(),
        "Chromium took no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_data_path_but_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("models.db");
    let store = EmbeddedModelStore::open(&db).unwrap();
    let spec = std::fs::read_to_string("seed/models/paris/v1.json").unwrap();
    store.put_version("paris", Some(1), &spec).await.unwrap();
    store.activate("paris", 1).await.unwrap();
    let token = "t0ken-that-must-not-be-logged";
    let log = dir.path().join("score.log");
    let child = Command::new(env!("CARGO_BIN_EXE_keyscore"))
        .args([
            "--log-format",
            "json",
            "score",
            "--ops-listen",
            "127.0.0.1:0",
        ])
        .env("KEYSCORE_STORE", format!("sqlite://{}", db.display()))
        .env("KEYSCORE_OPS_TOKEN", token)
        .env("KEYSCORE_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut score = Score { stdin: None, child };
    score.stdin = score.child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(at) = text.find("\"addr\":\"") {
            let rest = &text[at + 8..];
            break rest[..rest.find('"').unwrap()].to_string();
        }
        assert!(Instant::now() < deadline, "no operations address:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = |path: &str, auth: Option<&str>| {
        let mut stream = TcpStream::connect(&addr).unwrap();
        let header = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n{header}\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.split(' ').nth(1).unwrap_or("").to_string()
    };
    let bearer = format!("Bearer {token}");
    for path in ["/metrics", "/status.json"] {
        assert_eq!(status(path, None), "401", "{path} without the token");
        assert_eq!(
            status(path, Some("Bearer nope")),
            "401",
            "{path} with a wrong token"
        );
        assert_eq!(status(path, Some(&bearer)), "200", "{path} with the token");
    }
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(status(path, None), "200", "{path} is open");
    }
    // The page takes the token from its address's fragment, which the browser never sends.
    let dom = dump_dom(
        &format!("http://{addr}/#token={token}"),
        &dir.path().join("profile"),
    );
    assert!(dom.contains("<tr data-key=\"paris\">"), "{dom}");
    let dom = dump_dom(&format!("http://{addr}/"), &dir.path().join("profile-2"));
    assert!(dom.contains("needs its bearer token"), "{dom}");
    drop(score);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\"token\":true"),
        "the log says a token is required: {text}"
    );
    assert!(!text.contains(token), "the token is never logged");
}
