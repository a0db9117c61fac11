//! Process management per the seed: the pid file (`app.pid_file`) and dropping root
//! privileges after the listeners are bound (`app.run_as_user` / `app.run_as_group`).

use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("pid file {path} is held by running process {pid}; is another cdrmunch running? (stop it, or remove the file if it is not cdrmunch)")]
    Held { path: String, pid: i32 },
    #[error("pid file {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Holds the pid file for the life of the process and removes it on drop.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes our pid, refusing while a live cdrmunch holds the file. A pid file left by a
    /// crash (no such process, or the pid now belongs to something else) is replaced.
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        let io = |source| PidFileError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        for _ in 0..3 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    return Ok(PidFile { path: path.to_path_buf() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    if let Some(pid) = text.trim().parse::<i32>().ok().filter(|p| *p > 0) {
                        if pid as u32 != std::process::id() && is_cdrmunch(pid) {
                            return Err(PidFileError::Held { path: path.display().to_string(), pid });
                        }
                    }
                    // stale: remove and try again (another starter may win the race)
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other("could not create it (another process keeps replacing it)")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .is_some_and(|p| p == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A live process that is a cdrmunch (by /proc cmdline where there is one): a pid reused by
/// an unrelated process after a reboot does not block the start.
fn is_cdrmunch(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let alive =
        unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !alive {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => String::from_utf8_lossy(&cmd).contains("cdrmunch"),
        Err(_) => true,
    }
}

/// Switches to `user` (and its primary group, or `group`) when running as root. Already
/// being that user is fine; any other non-root start with a user configured is an error, as
/// is an unknown user or group.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    let (uid, user_gid) = match user {
        Some(u) => {
            let c = CString::new(u).map_err(|_| format!("app.run_as_user '{u}' is not a user name"))?;
            // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
            let pw = unsafe { libc::getpwnam(c.as_ptr()) };
            if pw.is_null() {
                return Err(format!("app.run_as_user '{u}': no such user"));
            }
            let pw = unsafe { &*pw };
            (Some(pw.pw_uid), Some(pw.pw_gid))
        }
        None => (None, None),
    };
    let gid = match group {
        Some(g) => {
            let c = CString::new(g).map_err(|_| format!("app.run_as_group '{g}' is not a group name"))?;
            // SAFETY: as above.
            let gr = unsafe { libc::getgrnam(c.as_ptr()) };
            if gr.is_null() {
                return Err(format!("app.run_as_group '{g}': no such group"));
            }
            Some(unsafe { (*gr).gr_gid })
        }
        None => user_gid,
    };
    // SAFETY: plain getters.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != 0 {
        let same = uid.is_none_or(|u| u == euid) && gid.is_none_or(|g| g == egid);
        return if same {
            Ok(())
        } else {
            Err(format!(
                "app.run_as_user/run_as_group: cdrmunch runs as uid {euid} gid {egid}, not root, and cannot switch to {}{}",
                user.unwrap_or("-"),
                group.map(|g| format!(":{g}")).unwrap_or_default()
            ))
        };
    }
    // SAFETY: standard privilege drop order: supplementary groups, group, then user.
    unsafe {
        if let Some(g) = gid {
            if libc::setgroups(1, &g) != 0 || libc::setgid(g) != 0 {
                return Err(format!("switching to gid {g}: {}", std::io::Error::last_os_error()));
            }
        }
        if let Some(u) = uid {
            if libc::setuid(u) != 0 {
                return Err(format!("switching to uid {u}: {}", std::io::Error::last_os_error()));
            }
            if libc::setuid(0) == 0 {
                return Err("privileges could not be dropped: setuid(0) still succeeds".into());
            }
        }
    }
    tracing::info!(
        "running as {}{}",
        user.unwrap_or("(same user)"),
        group.map(|g| format!(":{g}")).unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_blocks_and_a_stale_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/cdrmunch.pid");
        let held = PidFile::acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        // this test binary is a live "cdrmunch" (its name contains it) with another pid? Use
        // pid 1's absence of "cdrmunch" instead: a reused pid is stale.
        drop(held);
        assert!(!path.exists(), "removed on drop");
        std::fs::write(&path, "1\n").unwrap();
        let replaced = PidFile::acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(replaced.path()).unwrap().trim(), std::process::id().to_string());
        drop(replaced);
        std::fs::write(&path, "999999999\n").unwrap();
        assert!(PidFile::acquire(&path).is_ok(), "no such process: stale");
    }

    #[test]
    fn unknown_users_are_refused() {
        assert!(drop_privileges(Some("no-such-user-cdrmunch"), None).unwrap_err().contains("no such user"));
        assert!(drop_privileges(None, None).is_ok());
    }
}
