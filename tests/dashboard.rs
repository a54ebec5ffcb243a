//! `dbsweep dashboard`: a real 2 x 2 sweep on the built-in tiny model, its dashboard written by
//! the binary, then loaded in a real headless Chromium: no script errors, every run present, a
//! screenshot that is not blank, and sorting by `?sort=` at load.
//!
//! Chromium is Debian's `chromium` package; when it is missing the test installs it with
//! apt-get (as root), and fails with a clear message if it cannot.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a bounded subprocess returned.
struct Done {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with stdout and stderr captured to files, killing it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Done {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdin(Stdio::null()).stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran longer than {limit:?}; stderr:\n{}", std::fs::read_to_string(&err).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Done { code: status.code(), stdout: read(&out), stderr: read(&err) }
}

/// `dbsweep --root ROOT ARGS...` from the repository root, asserting success.
fn dbsweep(root: &Path, args: &[&str], limit: Duration) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbsweep"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).arg("--root").arg(root).args(args).env_remove("DBSWEEP_ROOT");
    let done = run_bounded(cmd, limit, &format!("dbsweep {args:?}"));
    assert_eq!(done.code, Some(0), "dbsweep {args:?} failed:\n{}\n{}", done.stdout, done.stderr);
    done.stdout
}

/// The shared sweep: trained once, its dashboard written once.
struct Fixture {
    root: PathBuf,
    html: PathBuf,
    /// Run ids in expansion order.
    runs: Vec<String>,
    /// Each run's smallest `val/loss`.
    best: Vec<(String, f64)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let sweep = root.join("dash.yaml");
        std::fs::write(
            &sweep,
            format!(
                "name: dash\nextends: {}\nbase:\n  data: {{instance_dir: {}, num_class_images: 2}}\n  \
                 train: {{max_train_steps: 6, lr_scheduler: constant}}\n  checkpoint: {{every_steps: 1000}}\n  \
                 validation: {{every_steps: 3}}\n  evaluation: {{clip_model: builtin:clip-tiny, \
                 dino_model: builtin:dino-tiny, prompts: [\"a {{}} in the snow\"], images_per_prompt: 2, steps: 5}}\n\
                 method: grid\nmetric: {{name: val/loss, goal: minimize}}\n\
                 parameters:\n  train.learning_rate: {{values: [1.0e-4, 5.0e-4]}}\n  \
                 train.prior_loss_weight: {{values: [0.5, 1.0]}}\n",
                manifest.join("sweeps/base/tiny.yaml").display(),
                manifest.join("examples/instance").display()
            ),
        )
        .unwrap();
        dbsweep(&root, &["run", sweep.to_str().unwrap(), "--gpus", "none"], Duration::from_secs(480));
        let html = root.join("out/dash.html");
        let printed = dbsweep(&root, &["dashboard", "dash", "--out", html.to_str().unwrap()], Duration::from_secs(60));
        assert!(printed.contains("wrote ") && html.exists(), "{printed}");
        let conn = rusqlite::Connection::open(root.join("dbsweep.sqlite")).unwrap();
        let mut stmt = conn.prepare("SELECT run_id FROM sweep_runs ORDER BY position").unwrap();
        let runs: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        let mut stmt =
            conn.prepare("SELECT run_id, MIN(value) FROM metrics WHERE key = 'val/loss' GROUP BY run_id").unwrap();
        let best: Vec<(String, f64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        assert_eq!(runs.len(), 4);
        assert_eq!(best.len(), 4, "every run has val/loss");
        Fixture { root, html, runs, best }
    })
}

/// The `chromium` binary, installed with apt-get when missing.
fn chromium() -> &'static str {
    static FOUND: OnceLock<()> = OnceLock::new();
    FOUND.get_or_init(|| {
        let present = || Command::new("sh").args(["-c", "command -v chromium"]).output().is_ok_and(|o| o.status.success());
        if present() {
            return;
        }
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium",
        ]);
        let done = run_bounded(cmd, Duration::from_secs(600), "apt-get install chromium");
        assert!(
            present(),
            "this test needs Debian's `chromium` (headless); installing it with apt-get failed (exit {:?}); \
             install it with `apt-get install chromium` as root:\n{}",
            done.code,
            done.stderr
        );
    });
    "chromium"
}

/// Runs headless Chromium on `url` with `args` (a fresh profile each time).
fn headless(url: &str, args: &[&str]) -> Done {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url);
    let done = run_bounded(cmd, Duration::from_secs(90), "chromium");
    assert_eq!(done.code, Some(0), "chromium failed:\n{}", done.stderr);
    assert!(!done.stderr.contains("Uncaught"), "JavaScript error:\n{}", done.stderr);
    done
}

fn url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn the_page_is_self_contained_and_lists_every_run() {
    let f = fixture();
    let html = std::fs::read_to_string(&f.html).unwrap();
    for id in &f.runs {
        assert!(html.contains(&format!("data-run=\"{id}\"")), "run {id} missing");
        let folder = std::path::absolute(f.root.join("runs").join(id)).unwrap();
        assert!(html.contains(&format!("href=\"file://{}\"", folder.display())), "no link to {}", folder.display());
    }
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 4, "one validation image per run");
    for external in ["src=\"http", "href=\"http", "url(http", "@import", "<link"] {
        assert!(!html.contains(external), "page references the network: {external}");
    }
    for curve in ["train/loss", "val/loss", "val/prior_drift"] {
        assert!(html.contains(&format!("<figure class=\"chart\" data-metric=\"{curve}\"><figcaption>")), "{curve}");
    }
    let best = f.best.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert!(html.contains(&format!("<tr data-run=\"{}\" class=\"best\">", best.0)), "best run {} not marked", best.0);
    assert!(html.contains("train.learning_rate \\ train.prior_loss_weight"), "grid axes");
}

#[test]
fn chromium_runs_the_script_without_errors_and_renders_a_non_blank_page() {
    let f = fixture();
    let dom = headless(&url(&f.html), &["--dump-dom"]).stdout;
    assert!(dom.contains("data-ready=\"1\""), "the page script did not finish:\n{}", &dom[..dom.len().min(2000)]);
    for id in &f.runs {
        assert!(dom.contains(id.as_str()), "run {id} missing from the rendered DOM");
    }
    let shot = tempfile::tempdir().unwrap();
    let png_path = shot.path().join("page.png");
    headless(&url(&f.html), &[&format!("--screenshot={}", png_path.display()), "--window-size=1400,1800"]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).expect("screenshot")));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1400, 1800));
    let channels = info.color_type.samples();
    assert!(channels >= 3 && info.bit_depth == png::BitDepth::Eight, "{:?} {:?}", info.color_type, info.bit_depth);
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks_exact(channels).collect();
    let colors: HashSet<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    let non_white = pixels.iter().filter(|p| p[..3].iter().any(|&c| c < 240)).count();
    assert!(colors.len() > 200, "only {} distinct colours: the page looks blank", colors.len());
    assert!(non_white * 50 > pixels.len(), "only {non_white} of {} pixels are not white", pixels.len());
}

#[test]
fn the_table_sorts_by_a_query_parameter_at_load() {
    let f = fixture();
    let mut expected = f.best.clone();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    let dom = headless(&format!("{}?sort=best&dir=desc", url(&f.html)), &["--dump-dom"]).stdout;
    assert!(dom.contains("data-sorted=\"best:desc\""), "sort not applied");
    let body = &dom[dom.find("<tbody>").unwrap()..dom.find("</tbody>").unwrap()];
    let order: Vec<&str> = body.split("<tr data-run=\"").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
    let want: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(order, want, "rows by best val/loss, largest first");
    // And by a swept key, ascending: the two smaller learning rates first.
    let dom = headless(&format!("{}?sort=train.learning_rate", url(&f.html)), &["--dump-dom"]).stdout;
    let body = &dom[dom.find("<tbody>").unwrap()..dom.find("</tbody>").unwrap()];
    let lrs: Vec<f64> = body
        .split("<tr data-run=\"")
        .skip(1)
        .map(|row| {
            let cell = row.split("<td data-v=\"").nth(2).unwrap();
            cell[..cell.find('"').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(lrs, [1e-4, 1e-4, 5e-4, 5e-4], "{body}");
}

#[test]
fn the_trade_off_chart_renders_with_the_front_and_the_base_model() {
    let f = fixture();
    let dom = headless(&url(&f.html), &["--dump-dom"]).stdout;
    let start = dom.find("id=\"tradeoff\"").expect("the subject against prompt fidelity chart");
    let chart = &dom[start..start + dom[start..].find("</figure>").unwrap()];
    assert_eq!(chart.matches("<circle class=\"point").count(), 4, "each run's evaluated end: {chart}");
    assert!(chart.matches("class=\"point on-front\"").count() >= 1, "{chart}");
    assert!(chart.contains("class=\"base\"") && chart.contains("base model:"), "{chart}");
    for id in &f.runs {
        assert!(chart.contains(&format!("data-run=\"{id}\"")), "{id} has its point");
    }
}
