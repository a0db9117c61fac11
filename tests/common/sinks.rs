//! Real sinks on loopback for the task handlers: moto_server (S3) and aiosmtpd (SMTP) as
//! child processes from the test venv that `scripts/test.sh` installs, and an HTTP server
//! that records requests and answers from a script (SMS gateway, Salesforce, transcription).

use std::collections::{HashMap, VecDeque};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

/// The venv holding moto_server and aiosmtpd: `CDRMUNCH_TEST_VENV`, else the one
/// `scripts/test.sh` creates under `~/.cache/cdrmunch/test-venv`.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("CDRMUNCH_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cdrmunch/test-venv")
    });
    let bin = venv.join("bin").join(name);
    assert!(bin.exists(), "{} not found: run scripts/test.sh, which installs moto and aiosmtpd", bin.display());
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server process, killed and reaped when dropped.
pub struct ChildServer {
    child: Child,
    pub port: u16,
}

impl ChildServer {
    fn spawn(mut cmd: Command, port: u16, log: &Path) -> ChildServer {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err)).spawn().expect("server starts");
        let mut server = ChildServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "server not listening on {port} after 30s");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's S3, in memory.
pub fn moto(dir: &Path) -> ChildServer {
    let port = free_port();
    let mut cmd = Command::new(venv_bin("moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    ChildServer::spawn(cmd, port, &dir.join("moto.log"))
}

/// aiosmtpd delivering into a maildir under `dir`.
pub fn smtpd(maildir: &Path) -> ChildServer {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let port = free_port();
    let mut cmd = Command::new(venv_bin("aiosmtpd"));
    cmd.args(["-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"]).arg(maildir);
    ChildServer::spawn(cmd, port, &maildir.with_extension("log"))
}

/// Messages delivered to a maildir, as raw text.
pub fn mails(maildir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(maildir.join("new"))
        .map(|rd| rd.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

type Script = Vec<(String, VecDeque<(u16, String)>)>;

/// An HTTP server on 127.0.0.1 that records every request. Responses come from a script per
/// path prefix (first match with answers left), else 200 `{}`.
pub struct HttpRecorder {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpRecorder {
    pub async fn start() -> HttpRecorder {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let script: Arc<Mutex<Script>> = Arc::default();
        let (r, s) = (requests.clone(), script.clone());
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (r, s) = (r.clone(), s.clone());
            async move {
                let path = uri.path().to_string();
                let headers = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = String::from_utf8_lossy(&body).into_owned();
                r.lock().unwrap().push(Recorded { method: method.to_string(), path: path.clone(), headers, body });
                let answer = s
                    .lock()
                    .unwrap()
                    .iter_mut()
                    .find(|(prefix, q)| path.starts_with(prefix.as_str()) && !q.is_empty())
                    .and_then(|(_, q)| q.pop_front());
                let (status, body) = answer.unwrap_or((200, "{}".into()));
                (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpRecorder { url, requests, script, task }
    }

    /// Answers for requests whose path starts with `prefix`, in order.
    pub fn script(&self, prefix: &str, answers: &[(u16, &str)]) {
        let q = answers.iter().map(|(s, b)| (*s, b.to_string())).collect();
        self.script.lock().unwrap().push((prefix.to_string(), q));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
