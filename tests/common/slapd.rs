//! A real OpenLDAP server (Debian `slapd`) on 127.0.0.1 for integration tests.
//!
//! Each [`Slapd`] gets its own temp dir (config, MDB database, log) and two free ports,
//! one for `ldap://` (StartTLS) and one for `ldaps://`, with a server certificate from a
//! per-process test CA ([`Slapd::ca_file`]). The `memberof` overlay maintains `memberOf`
//! on users (with referential integrity), and ACLs let only the service account and each
//! user themselves read entries. Entries are written with the OpenLDAP client tools as
//! the rootdn, over `ldaps://`. Uses only std and `tempfile`, so it can be included with
//! `#[path = "common/slapd.rs"] mod slapd;`. Skip tests when [`slapd_available`] is false.
#![allow(dead_code)]

use std::io::{Read, Seek};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPPASSWD: &str = "/usr/sbin/slappasswd";
const ROOT_DN: &str = "cn=admin,dc=lab,dc=example";
const ROOT_PASSWORD: &str = "root-secret";
const SERVICE_DN: &str = "cn=svc,ou=services,dc=lab,dc=example";
const SERVICE_PASSWORD: &str = "svc-secret";
/// How long slapd may take to answer after it is spawned, or to exit after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one run of an ldap-utils tool may take before it is killed.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one readiness probe may take (something else may hold the port).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether slapd (with the mdb backend and memberof overlay), ldap-utils and openssl are
/// installed, so that [`Slapd::start`] can work.
pub fn slapd_available() -> bool {
    let files = [
        SLAPD,
        SLAPPASSWD,
        "/usr/lib/ldap/back_mdb.so",
        "/usr/lib/ldap/memberof.so",
        "/etc/ldap/schema/nis.schema",
    ];
    let tools = ["ldapadd", "ldapmodify", "ldapsearch", "openssl"];
    files.iter().all(|f| Path::new(f).exists())
        && tools.iter().all(|tool| {
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()))
        })
}

/// How a [`Slapd`] is configured.
#[derive(Debug, Clone)]
pub struct SlapdOptions {
    /// `security simple_bind=64`: a simple bind over plain `ldap://` (no StartTLS) is refused
    /// with "confidentiality required", which proves a client used TLS. Default: true.
    pub require_tls_for_bind: bool,
}

impl Default for SlapdOptions {
    fn default() -> Self {
        SlapdOptions {
            require_tls_for_bind: true,
        }
    }
}

/// A running slapd with the base tree `dc=lab,dc=example` (`ou=people`, `ou=groups`,
/// `ou=services` and the service account). Killed on drop; its temp dir is removed then.
pub struct Slapd {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
    tls_port: u16,
}

impl Slapd {
    /// The directory's suffix.
    pub const BASE: &'static str = "dc=lab,dc=example";

    /// Starts a fresh directory with the base tree. Panics with slapd's stderr on failure.
    pub fn start() -> Slapd {
        Slapd::start_with(SlapdOptions::default())
    }

    /// [`Slapd::start`] with options.
    pub fn start_with(options: SlapdOptions) -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("slapd-")
            .tempdir()
            .expect("slapd temp dir");
        std::fs::create_dir(dir.path().join("db")).expect("create slapd db dir");
        let tls = tls();
        for (name, pem) in [
            ("ca.pem", &tls.ca),
            ("server.pem", &tls.cert),
            ("server.key", &tls.key),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("write TLS file");
        }
        let d = dir.path().display();
        let security = if options.require_tls_for_bind {
            "security simple_bind=64"
        } else {
            ""
        };
        let conf = format!(
            r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key
{security}

database mdb
maxsize 16777216
directory {d}/db
suffix "{base}"
rootdn "{ROOT_DN}"
rootpw {rootpw}
access to attrs=userPassword
    by dn.exact="{SERVICE_DN}" none
    by self write
    by anonymous auth
    by * none
access to *
    by dn.exact="{SERVICE_DN}" read
    by self read
    by * none
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
"#,
            base = Slapd::BASE,
            rootpw = root_password_hash(),
        );
        std::fs::write(dir.path().join("slapd.conf"), conf).expect("write slapd.conf");

        // Two listeners held at once, so the ports differ; slapd binds them right after.
        let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = a.local_addr().expect("local addr").port();
        let tls_port = b.local_addr().expect("local addr").port();
        drop((a, b));

        let mut slapd = Slapd {
            dir,
            child: None,
            port,
            tls_port,
        };
        slapd.spawn();
        slapd.add(&format!(
            "dn: {base}\nobjectClass: dcObject\nobjectClass: organization\ndc: lab\no: Lab\n\n\
             dn: ou=people,{base}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: ou=services,{base}\nobjectClass: organizationalUnit\nou: services\n\n\
             dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
             cn: svc\nuserPassword: {SERVICE_PASSWORD}\n",
            base = Slapd::BASE,
        ));
        slapd
    }

    /// `ldaps://127.0.0.1:PORT` (TLS from the first byte).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// `ldap://127.0.0.1:PORT`, for StartTLS (or plain LDAP, see [`SlapdOptions`]).
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// PEM file of the test CA that signed the server certificate (SAN `IP:127.0.0.1`,
    /// `DNS:localhost`), in this instance's temp dir. All instances in a process share
    /// the CA.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `ou=people,dc=lab,dc=example`
    pub fn people_base(&self) -> String {
        format!("ou=people,{}", Slapd::BASE)
    }

    /// `ou=groups,dc=lab,dc=example`
    pub fn groups_base(&self) -> String {
        format!("ou=groups,{}", Slapd::BASE)
    }

    /// `cn=svc,ou=services,dc=lab,dc=example`: may read every entry (not passwords).
    pub fn service_dn(&self) -> String {
        SERVICE_DN.to_string()
    }

    /// The service account's password.
    pub fn service_password(&self) -> String {
        SERVICE_PASSWORD.to_string()
    }

    /// The rootdn, which bypasses the ACLs.
    pub fn root_dn(&self) -> String {
        ROOT_DN.to_string()
    }

    /// The rootdn's password.
    pub fn root_password(&self) -> String {
        ROOT_PASSWORD.to_string()
    }

    /// `uid=<uid>,ou=people,dc=lab,dc=example` (the value escaped per RFC 4514).
    pub fn user_dn(&self, uid: &str) -> String {
        format!("uid={},{}", escape_dn_value(uid), self.people_base())
    }

    /// `cn=<group>,ou=groups,dc=lab,dc=example` (the value escaped per RFC 4514).
    pub fn group_dn(&self, group: &str) -> String {
        format!("cn={},{}", escape_dn_value(group), self.groups_base())
    }

    /// Adds an inetOrgPerson `uid=<uid>,ou=people` with cn and displayName `display_name`,
    /// sn its last word, mail `<uid>@lab.example` and userPassword `password` stored as is
    /// (a simple bind compares it in plain text).
    pub fn add_user(&self, uid: &str, display_name: &str, password: &str) {
        let cn = if display_name.trim().is_empty() {
            uid
        } else {
            display_name
        };
        let sn = cn.split_whitespace().last().unwrap_or(uid);
        self.add(
            &[
                ldif_line("dn", &self.user_dn(uid)),
                "objectClass: inetOrgPerson".to_string(),
                ldif_line("uid", uid),
                ldif_line("cn", cn),
                ldif_line("sn", sn),
                ldif_line("displayName", cn),
                ldif_line("mail", &format!("{uid}@lab.example")),
                ldif_line("userPassword", password),
            ]
            .join("\n"),
        );
    }

    /// Deletes the user's entry (a user removed from the directory); memberof-refint then
    /// removes them from their groups.
    pub fn delete_user(&self, uid: &str) {
        self.modify(&format!(
            "{}\nchangetype: delete\n",
            ldif_line("dn", &self.user_dn(uid))
        ));
    }

    /// Adds the user to the groupOfNames `cn=<group>,ou=groups`, creating the group if
    /// needed. A groupOfNames needs a member, so every group also lists the service
    /// account as a placeholder member (it never gets removed).
    pub fn add_to_group(&self, group: &str, uid: &str) {
        let dn = ldif_line("dn", &self.group_dn(group));
        let create = [
            dn.clone(),
            "objectClass: groupOfNames".to_string(),
            ldif_line("cn", group),
            ldif_line("member", SERVICE_DN),
        ];
        let out = self.as_root("ldapadd", &create.join("\n"));
        if !out.status.success() && out.status.code() != Some(68) {
            panic!("creating group {group}: {}", describe(&out));
        }
        let member = ldif_line("member", &self.user_dn(uid));
        self.modify(&format!(
            "{dn}\nchangetype: modify\nadd: member\n{member}\n"
        ));
    }

    /// Removes the user from the group (panics if they are not a member).
    pub fn remove_from_group(&self, group: &str, uid: &str) {
        let dn = ldif_line("dn", &self.group_dn(group));
        let member = ldif_line("member", &self.user_dn(uid));
        self.modify(&format!(
            "{dn}\nchangetype: modify\ndelete: member\n{member}\n"
        ));
    }

    /// Runs ldapmodify as the rootdn with this LDIF; each record needs its `changetype:`
    /// (add, modify, delete, modrdn). Panics on failure, with the tool's output.
    pub fn modify(&self, ldif: &str) {
        let out = self.as_root("ldapmodify", ldif);
        assert!(
            out.status.success(),
            "ldapmodify of\n{ldif}\nfailed: {}",
            describe(&out)
        );
    }

    /// The user's memberOf values as the service account reads them (empty when the user
    /// does not exist).
    pub fn member_of(&self, uid: &str) -> Vec<String> {
        let dn = self.user_dn(uid);
        let url = self.ldaps_url();
        #[rustfmt::skip]
        let args = [
            "-x", "-H", &url, "-D", SERVICE_DN, "-w", SERVICE_PASSWORD,
            "-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b", &dn, "memberOf",
        ];
        let out = self.tool("ldapsearch", &args, None, TOOL_TIMEOUT);
        if out.status.code() == Some(32) {
            return Vec::new();
        }
        assert!(
            out.status.success(),
            "ldapsearch memberOf of {dn}: {}",
            describe(&out)
        );
        let mut groups = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((attr, value)) = line.split_once(':') else {
                continue;
            };
            if !attr.eq_ignore_ascii_case("memberOf") {
                continue;
            }
            groups.push(match value.strip_prefix(':') {
                Some(b64) => String::from_utf8(base64_decode(b64.trim())).expect("UTF-8 memberOf"),
                None => value.trim_start().to_string(),
            });
        }
        groups
    }

    /// Stops the server (SIGTERM, then SIGKILL after a timeout) and waits for it; the
    /// database stays for [`Slapd::restart`]. Does nothing when it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + READY_TIMEOUT;
        while terminated && Instant::now() < deadline {
            if child.try_wait().expect("wait for slapd").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same ports with the same database (stopping it first if it
    /// is running).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// slapd's stderr so far (all runs of this instance).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Spawns slapd in the foreground and waits until it answers over ldaps.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("slapd.log"))
            .expect("open slapd.log");
        let urls = format!("{}/ {}/", self.ldap_url(), self.ldaps_url());
        let child = Command::new(SLAPD)
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .args(["-h", &urls, "-d", "none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone slapd.log"))
            .stderr(log)
            .spawn()
            .expect("spawn slapd");
        self.child = Some(child);
        let url = self.ldaps_url();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("slapd child");
            if let Some(status) = child.try_wait().expect("wait for slapd") {
                self.child = None;
                panic!("slapd exited at start ({status}):\n{}", self.log());
            }
            let args = ["-x", "-H", &url, "-s", "base", "-b", "", "namingContexts"];
            if self
                .tool("ldapsearch", &args, None, PROBE_TIMEOUT)
                .status
                .success()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "slapd did not answer on {url} within {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs ldapadd as the rootdn with this LDIF (panics on failure).
    fn add(&self, ldif: &str) {
        let out = self.as_root("ldapadd", ldif);
        assert!(
            out.status.success(),
            "ldapadd of\n{ldif}\nfailed: {}",
            describe(&out)
        );
    }

    /// Runs ldapadd or ldapmodify bound as the rootdn over ldaps with this LDIF.
    fn as_root(&self, program: &str, ldif: &str) -> Output {
        let url = self.ldaps_url();
        let args = ["-x", "-H", &url, "-D", ROOT_DN, "-w", ROOT_PASSWORD];
        self.tool(program, &args, Some(ldif), TOOL_TIMEOUT)
    }

    /// Runs an ldap-utils tool that trusts the test CA, killing it after `timeout`
    /// (a TLS handshake with a listener that never answers hangs, `nettimeout` or not).
    /// `ldif` goes in through a file and the output into files: no pipes to deadlock on.
    fn tool(&self, program: &str, args: &[&str], ldif: Option<&str>, timeout: Duration) -> Output {
        let dir = self.dir.path();
        let mut stdout = tempfile::tempfile_in(dir).expect("stdout temp file");
        let mut stderr = tempfile::tempfile_in(dir).expect("stderr temp file");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .args(["-o", "nettimeout=5"])
            .env("LDAPTLS_CACERT", self.ca_file())
            .env("LDAPTLS_REQCERT", "demand")
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("clone stdout file"))
            .stderr(stderr.try_clone().expect("clone stderr file"));
        let input;
        if let Some(ldif) = ldif {
            input = tempfile::NamedTempFile::new_in(dir).expect("LDIF temp file");
            std::fs::write(input.path(), format!("{ldif}\n")).expect("write LDIF");
            cmd.arg("-f").arg(input.path());
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {program}: {e}"));
        let deadline = Instant::now() + timeout;
        let (status, timed_out) = loop {
            if let Some(status) = child.try_wait().expect("wait for ldap tool") {
                break (status, false);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break (child.wait().expect("wait for ldap tool"), true);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let read = |file: &mut std::fs::File| {
            let mut bytes = Vec::new();
            file.rewind().expect("rewind output file");
            file.read_to_end(&mut bytes).expect("read output file");
            bytes
        };
        let (stdout, mut stderr) = (read(&mut stdout), read(&mut stderr));
        if timed_out {
            stderr.extend(format!("(killed after {timeout:?})").bytes());
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// PEMs of the test CA and of the server certificate it signed (and its key), made once
/// per process (openssl takes ~100 ms) and written into each instance's dir.
struct Tls {
    ca: String,
    cert: String,
    key: String,
}

fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("TLS temp dir");
        let p = |name: &str| dir.path().join(name);
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        let openssl = |args: &str| {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(out.status.success(), "openssl {args}: {}", describe(&out));
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(&format!(
            "req -x509 {ec} -keyout ca.key -out ca.pem -days 30 -subj /CN=Notebox-test-CA \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
        openssl(&format!(
            "req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
        ));
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
             -extfile server.ext -out server.pem",
        );
        let read = |name: &str| std::fs::read_to_string(p(name)).expect("read TLS file");
        Tls {
            ca: read("ca.pem"),
            cert: read("server.pem"),
            key: read("server.key"),
        }
    })
}

/// `{SSHA}` hash of the rootdn's password, made once per process.
fn root_password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let out = Command::new(SLAPPASSWD)
            .args(["-s", ROOT_PASSWORD])
            .output()
            .expect("run slappasswd");
        assert!(out.status.success(), "slappasswd: {}", describe(&out));
        String::from_utf8(out.stdout)
            .expect("slappasswd output")
            .trim()
            .to_string()
    })
}

/// Exit status, stdout and stderr of a finished tool, for panic messages.
fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One LDIF line `attr: value`, or `attr:: base64` where RFC 2849 requires it.
fn ldif_line(attr: &str, value: &str) -> String {
    let safe = value
        .bytes()
        .all(|b| b.is_ascii() && !matches!(b, b'\0' | b'\n' | b'\r'))
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ');
    if safe {
        format!("{attr}: {value}")
    } else {
        format!("{attr}:: {}", base64_encode(value.as_bytes()))
    }
}

/// Escapes an attribute value for use in a DN (RFC 4514).
fn escape_dn_value(value: &str) -> String {
    let mut out = String::new();
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => out.push('\\'),
            '#' | ' ' if i == 0 => out.push('\\'),
            ' ' if i == last => out.push('\\'),
            '\0' => {
                out.push_str("\\00");
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() {
                B64[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            };
            out.push(c as char);
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in text.bytes().take_while(|&c| c != b'=') {
        let v = B64
            .iter()
            .position(|&b| b == c)
            .expect("base64 in ldapsearch output");
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
