//! What the workspace's tests need from the machine, found one way for every package: the
//! workspace root, the reference folder `../shared` beside it, and the external tools CI installs
//! (the real `kubectl` binaries, `shellcheck`, `prometheus` with `promtool`).
//!
//! A test that needs a tool FAILS when the tool is missing, naming how to install it. The only
//! opt-out is explicit: `MESHVM_ALLOW_MISSING_TOOLS=1` turns such a test into an early return
//! that prints `IGNORED (MESHVM_ALLOW_MISSING_TOOLS): <why>` — never a silent pass.

use std::path::{Path, PathBuf};

/// The environment variable that lets tests needing a missing tool return early, saying so.
pub const ALLOW_MISSING_TOOLS: &str = "MESHVM_ALLOW_MISSING_TOOLS";

/// The workspace root: the folder whose `Cargo.toml` has `[workspace]`, found upwards from this
/// crate's manifest directory (no absolute machine path anywhere).
pub fn workspace_root() -> PathBuf {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| panic!("no workspace Cargo.toml above {}", start.display()))
        .to_path_buf()
}

/// `../shared/conformance` beside the workspace root: the real data the tests compare with.
/// Panics with what to do when the folder is absent.
pub fn conformance_dir() -> PathBuf {
    let dir = workspace_root().join("../shared/conformance");
    assert!(
        dir.join("PROVENANCE.md").is_file(),
        "the reference folder {} is missing: the tests read conformance data from `../shared` beside \
         the checkout (CI lays a copy there); put the project's shared/ folder beside the repository",
        dir.display()
    );
    dir
}

/// A file under [`conformance_dir`], e.g. `workload-entry-configure/CASES.yaml`.
pub fn conformance(rel: &str) -> PathBuf {
    conformance_dir().join(rel)
}

/// Whether a missing tool may turn a test into an announced early return.
fn missing_tools_allowed() -> bool {
    std::env::var(ALLOW_MISSING_TOOLS).is_ok_and(|v| v == "1")
}

/// A tool's absence: a panic naming how to install it, or (with the opt-out) `None` after
/// printing `IGNORED (…)` so the log shows the test did not run.
fn missing(tool: &str, install: &str) -> Option<PathBuf> {
    let why = format!("{tool} is not installed ({install})");
    assert!(
        missing_tools_allowed(),
        "{why}; CI installs it (.ci/run). Set {ALLOW_MISSING_TOOLS}=1 to let tests that need it return early"
    );
    eprintln!("IGNORED ({ALLOW_MISSING_TOOLS}): {why}");
    None
}

/// The path of `name` on PATH (resolved through symlinks), if any.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
}

/// `shellcheck`, which CI installs with apt.
pub fn require_shellcheck() -> Option<PathBuf> {
    on_path("shellcheck").or_else(|| missing("shellcheck", "apt-get install shellcheck"))
}

/// `kubectl` on PATH, resolved (`readlink -f "$(command -v kubectl)"`): on these machines a
/// dispatcher that runs `kubectl.1.NN` beside it by the server's minor version.
pub fn require_kubectl() -> Option<PathBuf> {
    on_path("kubectl").or_else(|| {
        missing(
            "kubectl",
            "the machine image provides kubectl and kubectl.1.27 … kubectl.1.33",
        )
    })
}

/// The real `kubectl.1.NN` binary beside the dispatcher, e.g. `kubectl_minor("1.32")`.
pub fn require_kubectl_minor(minor: &str) -> Option<PathBuf> {
    let dispatcher = require_kubectl()?;
    let path = dispatcher
        .parent()
        .map(|d| d.join(format!("kubectl.{minor}")))
        .filter(|p| p.is_file());
    path.or_else(|| {
        missing(
            &format!("kubectl.{minor}"),
            "expected beside the kubectl dispatcher on PATH",
        )
    })
}

/// `prometheus` and `promtool`, which CI installs with apt (Debian's `prometheus` package holds
/// both): `(prometheus, promtool)`.
pub fn require_prometheus() -> Option<(PathBuf, PathBuf)> {
    let install = "apt-get install prometheus (it brings promtool)";
    let prometheus = on_path("prometheus").or_else(|| missing("prometheus", install))?;
    let promtool = on_path("promtool").or_else(|| missing("promtool", install))?;
    Some((prometheus, promtool))
}

/// A real Prometheus on a free loopback port, its TSDB filled from an OpenMetrics template, killed
/// (and its data removed) on drop.
///
/// The template is OpenMetrics whose sample timestamps are written relative to the moment the
/// test runs, `now` or `now-SECONDS`, so the blocks `promtool tsdb create-blocks-from
/// openmetrics` makes are always inside the retention and the query window.
pub struct Prometheus {
    child: std::process::Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Prometheus {
    /// Start one holding the samples of `template` (none: an empty TSDB). `None` only when the
    /// tools are missing and [`ALLOW_MISSING_TOOLS`] is set; any other trouble panics, saying what.
    pub fn start(template: Option<&Path>) -> Option<Prometheus> {
        Self::start_with_web_config(template, None)
    }

    /// [`Prometheus::start`] with a `--web.config.file` of this YAML (TLS, basic auth: Prometheus's
    /// exporter-toolkit web configuration). The URL stays `http://…`; with `tls_server_config`
    /// the test makes it `https://` itself.
    pub fn start_with_web_config(
        template: Option<&Path>,
        web_config: Option<&str>,
    ) -> Option<Prometheus> {
        // No scrape jobs: the TSDB holds only what the template put there.
        Self::launch(template, web_config, "global:\n  scrape_interval: 1h\n")
    }

    /// [`Prometheus::start`] scraping `targets` (`HOST:PORT`, e.g. an [`Exporter`]'s) every
    /// `interval` (a Prometheus duration such as `1s`) as job `envoy-stats` (the name of
    /// Istio's own job for the sidecars' stats), so series can grow while a test runs.
    pub fn start_scraping(
        template: Option<&Path>,
        targets: &[String],
        interval: &str,
    ) -> Option<Prometheus> {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nscrape_configs:\n  - job_name: envoy-stats\n    scrape_interval: {interval}\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        Self::launch(template, None, &config)
    }

    fn launch(
        template: Option<&Path>,
        web_config: Option<&str>,
        config_text: &str,
    ) -> Option<Prometheus> {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let (prometheus, promtool) = require_prometheus()?;
        let dir = std::env::temp_dir().join(format!(
            "meshvm-prometheus-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("create the Prometheus test directory");
        if let Some(template) = template {
            let text = std::fs::read_to_string(template)
                .unwrap_or_else(|e| panic!("read {}: {e}", template.display()));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_secs();
            let metrics = dir.join("metrics.om");
            std::fs::write(&metrics, openmetrics_at(&text, now))
                .expect("write the OpenMetrics file");
            let out = std::process::Command::new(&promtool)
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&metrics)
                .arg(&data)
                .output()
                .expect("run promtool");
            assert!(
                out.status.success(),
                "promtool tsdb create-blocks-from openmetrics {}: {}{}",
                template.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text).expect("write the config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create the log");
        let mut command = std::process::Command::new(&prometheus);
        command
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--config.file={}", config.display()));
        if let Some(web) = web_config {
            let path = dir.join("web.yml");
            std::fs::write(&path, web).expect("write the web config");
            command.arg(format!("--web.config.file={}", path.display()));
        }
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut server = Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready(port, web_config.is_some());
        Some(server)
    }

    /// Wait (up to 30s) until `GET /-/ready` answers 200 — or, behind a web config (TLS, auth)
    /// this plain request cannot pass, until the log says the web server is ready.
    fn wait_ready(&mut self, port: u16, web_config: bool) {
        use std::io::{Read as _, Write as _};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited ({status}) before it was ready: {}",
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
            let ready = if web_config {
                log.contains("Server is ready to receive web requests")
                    && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                    let mut answer = String::new();
                    s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                        .and_then(|()| s.read_to_string(&mut answer))
                        .is_ok()
                        && answer.starts_with("HTTP/1.0 200")
                })
            };
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus on port {port} not ready after 30s: {}",
                std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A stand-in for a sidecar's stats endpoint (Envoy's `/stats/prometheus`): answers every
/// request with the Prometheus text exposition it holds now, which the test changes with
/// [`Exporter::set`], for a real [`Prometheus::start_scraping`] to scrape. Stopped on drop.
pub struct Exporter {
    addr: std::net::SocketAddr,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Serve `body` on a free loopback port.
    pub fn start(body: &str) -> Exporter {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let addr = listener.local_addr().expect("its address");
        let body = std::sync::Arc::new(std::sync::Mutex::new(body.to_string()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (shared, stopped) = (body.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                // The request's head (a scrape has no body).
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = shared.lock().map(|b| b.clone()).unwrap_or_default();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Exporter {
            addr,
            body,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`, as a scrape target.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Serve `body` from now on.
    pub fn set(&self, body: &str) {
        *self.body.lock().expect("the exporter's body") = body.to_string();
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the stop.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `template` with every sample's timestamp `now` / `now-SECONDS` replaced by seconds since the
/// epoch, its own comments (`#` lines other than `# TYPE`, `# HELP`, `# UNIT`) dropped, and
/// `# EOF` at the end (promtool requires it).
pub fn openmetrics_at(template: &str, now: u64) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    for line in template.lines() {
        // `# EOF` is added at the end; other comments than OpenMetrics' descriptors are the
        // fixture's notes, which promtool would refuse.
        let descriptor = ["# TYPE ", "# HELP ", "# UNIT "]
            .iter()
            .any(|d| line.starts_with(d));
        if line.trim().is_empty() || (line.starts_with('#') && !descriptor) {
            continue;
        }
        let stamp = line
            .rsplit_once(' ')
            .filter(|_| !line.starts_with('#'))
            .and_then(|(head, last)| {
                let at = if last == "now" {
                    Some(now)
                } else {
                    last.strip_prefix("now-")
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(|back| now - back)
                };
                at.map(|t| format!("{head} {t}"))
            });
        out.push_str(stamp.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_packages() {
        let root = workspace_root();
        for member in ["shared", "plugins", "tests/kube-sim", "xtask"] {
            assert!(root.join(member).join("Cargo.toml").is_file(), "{member}");
        }
    }

    #[test]
    fn openmetrics_timestamps_are_placed_relative_to_now() {
        let text = "# a note\n# TYPE x counter\nx_total{a=\"b c\"} 1 now-60\nx_total{a=\"b\"} 2 now\n# EOF\n";
        assert_eq!(
            openmetrics_at(text, 1000),
            "# TYPE x counter\nx_total{a=\"b c\"} 1 940\nx_total{a=\"b\"} 2 1000\n# EOF\n"
        );
    }

    #[test]
    fn a_real_prometheus_serves_the_fixture() {
        use std::io::{Read as _, Write as _};
        let fixture = workspace_root().join("tests/fixtures/prometheus/plaintext-into-bookinfo.om");
        let Some(p) = Prometheus::start(Some(&fixture)) else {
            return;
        };
        let port = p.url.rsplit(':').next().unwrap().to_string();
        let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        s.write_all(b"GET /api/v1/query?query=count(count_over_time(istio_requests_total%5B1h%5D)) HTTP/1.0\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.contains(r#""status":"success""#), "{answer}");
        assert!(
            answer.contains(r#""value":["#),
            "one series at least: {answer}"
        );
        let dir = p.dir.clone();
        drop(p);
        assert!(!dir.exists(), "removed on drop");
    }

    #[test]
    fn a_real_prometheus_scrapes_the_exporter() {
        use std::io::{Read as _, Write as _};
        let exporter = Exporter::start("# TYPE x_total counter\nx_total{a=\"b\"} 7\n");
        let Some(p) = Prometheus::start_scraping(None, &[exporter.target()], "1s") else {
            return;
        };
        let port = p.url.rsplit(':').next().unwrap().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
            s.write_all(b"GET /api/v1/query?query=x_total HTTP/1.0\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            if answer.contains(r#""job":"envoy-stats""#) && answer.contains(r#","7"]"#) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not scraped in 20s: {answer}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    #[test]
    fn conformance_data_is_beside_the_workspace() {
        assert!(conformance("certs/samples").is_dir());
    }
}
