//! `apppass doctor`: reads a service's PAM configuration the way libpam does (includes,
//! substacks, control values, jumps) and tells the administrator whether pam_apppass is
//! wired in, in which mode (what a right app password, the account password and a wrong
//! password each get), with which scope, and whether the apppassd the module would ask
//! answers, who owns its socket, and whether it can use its store.
//!
//! The mode is not guessed from keywords: the auth stack is evaluated with libpam's rules
//! for four cases, with pam_apppass, pam_unix, pam_permit and pam_deny answering as they
//! would in each. Other modules are taken as neutral (PAM_IGNORE) and named in the
//! report, since their answers depend on things the doctor cannot know.

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use apppass_core::policy;
use apppass_proto::args;
use apppass_proto::conf::{self, ClientSettings};
use apppass_proto::{Request, Response};

/// The module's file name in PAM configurations.
pub const MODULE: &str = "pam_apppass.so";
/// Where PAM service files live.
pub const PAM_DIR: &str = "/etc/pam.d";
/// libpam's limit on nested includes, and ours.
const MAX_DEPTH: usize = 32;

/// What a password that opens one of these services gives: root, or another account.
/// An app password that does is an account password in all but name: people must not
/// be able to make one for themselves (apppass.conf's services never lists these unless
/// an admin wants that).
fn grants(service: &str) -> Option<&'static str> {
    Some(match service {
        "sudo" | "sudo-i" => "root, for every user sudoers lets in",
        "su" | "su-l" => "the account su switches to, root included",
        "doas" => "root, for every user doas.conf lets in",
        "polkit-1" => "administrative actions (pkexec, systemctl, ...)",
        "login" => "a console login",
        _ => return None,
    })
}

/// The services in `pam_dir` whose auth stack reads `file` (a common-* file).
fn includers(pam_dir: &Path, file: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(pam_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with("common-") && !n.starts_with('.') && !n.ends_with('~'))
        .filter(|n| {
            let mut reader = Reader {
                pam_dir,
                errors: Vec::new(),
            };
            let auth = reader.expand(&pam_dir.join(n), Group::Auth, 0);
            rules(&auth).iter().any(|r| r.file == file)
        })
        .collect();
    names.sort();
    names
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory of service files; includes are resolved against it.
    pub pam_dir: PathBuf,
    /// The service to check; `None`: every service whose auth stack has pam_apppass.
    pub service: Option<String>,
    /// Read this file as the service's configuration instead of `pam_dir/service`.
    pub file: Option<PathBuf>,
    /// Directories where libpam finds a module named without a path.
    pub module_dirs: Vec<PathBuf>,
    /// Whether to open and check databases (only root can, and the module runs as root).
    pub as_root: bool,
}

/// Where libpam looks for `pam_unix.so`-style names: the directory that holds pam_unix.
pub fn default_module_dirs() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    let candidates = [
        format!("/usr/lib/{arch}-linux-gnu/security"),
        format!("/lib/{arch}-linux-gnu/security"),
        "/usr/lib64/security".to_string(),
        "/lib64/security".to_string(),
        "/usr/lib/security".to_string(),
        "/lib/security".to_string(),
    ];
    let found: Vec<PathBuf> = candidates
        .iter()
        .map(PathBuf::from)
        .filter(|d| d.join("pam_unix.so").exists())
        .collect();
    if found.is_empty() {
        candidates.iter().map(PathBuf::from).collect()
    } else {
        found
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Info,
    Warning,
    Problem,
}

impl Level {
    fn tag(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warning => "WARNING",
            Level::Problem => "PROBLEM",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

/// What the doctor found for one service.
#[derive(Debug, Clone)]
pub struct Report {
    pub service: String,
    pub file: PathBuf,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    fn push(&mut self, level: Level, text: impl Into<String>) {
        self.findings.push(Finding {
            level,
            text: text.into(),
        });
    }
}

/// Why the doctor could not start at all (as opposed to what it found).
#[derive(Debug)]
pub enum DoctorError {
    /// The file given with `--file`, or the PAM directory, cannot be read.
    Read(PathBuf, std::io::Error),
    /// A service name that cannot be a file name in the PAM directory.
    BadService(String),
}

impl fmt::Display for DoctorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DoctorError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            DoctorError::BadService(s) => write!(f, "bad service name {s:?}"),
        }
    }
}

impl std::error::Error for DoctorError {}

// ---------------------------------------------------------------------------------------
// Reading PAM configuration files.

/// The four management groups of a PAM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Auth,
    Account,
    Password,
    Session,
}

impl Group {
    fn parse(word: &str) -> Option<Group> {
        match word.to_ascii_lowercase().as_str() {
            "auth" => Some(Group::Auth),
            "account" => Some(Group::Account),
            "password" => Some(Group::Password),
            "session" => Some(Group::Session),
            _ => None,
        }
    }
}

/// What libpam does with each return value of a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Ignore,
    Ok,
    Done,
    Bad,
    Die,
    Reset,
    Jump(usize),
}

/// The return values the doctor reasons about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ret {
    Success,
    AuthErr,
    UserUnknown,
    Ignore,
}

impl Ret {
    fn name(self) -> &'static str {
        match self {
            Ret::Success => "success",
            Ret::AuthErr => "auth_err",
            Ret::UserUnknown => "user_unknown",
            Ret::Ignore => "ignore",
        }
    }
}

/// A control field: simple keyword or `[value=action ...]`, as a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Control {
    pairs: Vec<(String, Action)>,
    text: String,
}

impl Control {
    fn parse(text: &str) -> Result<Control, String> {
        let simple: &[(&str, Action)] = match text {
            "required" => &[
                ("success", Action::Ok),
                ("new_authtok_reqd", Action::Ok),
                ("ignore", Action::Ignore),
                ("default", Action::Bad),
            ],
            "requisite" => &[
                ("success", Action::Ok),
                ("new_authtok_reqd", Action::Ok),
                ("ignore", Action::Ignore),
                ("default", Action::Die),
            ],
            "sufficient" => &[
                ("success", Action::Done),
                ("new_authtok_reqd", Action::Done),
                ("default", Action::Ignore),
            ],
            "optional" => &[
                ("success", Action::Ok),
                ("new_authtok_reqd", Action::Ok),
                ("default", Action::Ignore),
            ],
            _ => &[],
        };
        if !simple.is_empty() {
            return Ok(Control {
                pairs: simple.iter().map(|(k, a)| (k.to_string(), *a)).collect(),
                text: text.to_string(),
            });
        }
        let inner = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .ok_or_else(|| format!("unknown control {text:?}"))?;
        let mut pairs = Vec::new();
        for pair in inner.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} in {text} is not value=action"))?;
            let action = match v.to_ascii_lowercase().as_str() {
                "ignore" => Action::Ignore,
                "ok" => Action::Ok,
                "done" => Action::Done,
                "bad" => Action::Bad,
                "die" => Action::Die,
                "reset" => Action::Reset,
                n => Action::Jump(
                    n.parse()
                        .map_err(|_| format!("{v:?} in {text} is not an action"))?,
                ),
            };
            pairs.push((k.to_ascii_lowercase(), action));
        }
        Ok(Control {
            pairs,
            text: text.to_string(),
        })
    }

    fn action(&self, ret: Ret) -> Action {
        let find = |name: &str| {
            self.pairs
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, a)| *a)
        };
        // libpam's default for a value the control does not name is "bad".
        find(ret.name())
            .or_else(|| find("default"))
            .unwrap_or(Action::Bad)
    }
}

/// One module line of a stack, where it came from.
#[derive(Debug, Clone)]
pub struct Rule {
    pub file: PathBuf,
    pub line: usize,
    pub text: String,
    group: Group,
    /// `-auth`: a missing module is skipped silently.
    pub dash: bool,
    control: Control,
    pub module: String,
    pub args: Vec<String>,
}

impl Rule {
    fn name(&self) -> &str {
        Path::new(&self.module)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&self.module)
    }

    fn is_apppass(&self) -> bool {
        self.name() == MODULE
    }

    fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// A stack as libpam runs it: includes flattened, substacks nested.
#[derive(Debug, Clone)]
enum Node {
    Rule(Rule),
    Substack { control: Control, nodes: Vec<Node> },
}

/// A raw line of a file: `@include FILE`, `TYPE include|substack FILE`, or a module rule.
#[derive(Debug, Clone)]
enum Line {
    IncludeAll(String),
    Include(Group, String),
    Substack(Group, Control, String),
    Rule(Rule),
}

/// Splits a PAM file into its logical lines (comments dropped, `\` continuations joined),
/// with the number of the physical line each starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if current.is_empty() {
            start = i + 1;
        }
        let content = raw.split('#').next().unwrap_or("");
        if let Some(cont) = content.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(content);
        if !current.trim().is_empty() {
            out.push((start, current.trim().to_string()));
        }
        current.clear();
    }
    if !current.trim().is_empty() {
        out.push((start, current.trim().to_string()));
    }
    out
}

/// Splits a rule into words, keeping `[...]` groups (which may hold spaces) whole.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '[' {
            for c in chars.by_ref() {
                word.push(c);
                if c == ']' {
                    break;
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

fn parse_file(path: &Path, text: &str) -> (Vec<Line>, Vec<String>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in logical_lines(text) {
        let w = words(&line);
        let place = format!("{}:{number}", path.display());
        if w[0] == "@include" {
            match w.get(1) {
                Some(f) => lines.push(Line::IncludeAll(f.clone())),
                None => errors.push(format!("{place}: @include without a file")),
            }
            continue;
        }
        let (dash, type_word) = match w[0].strip_prefix('-') {
            Some(t) => (true, t),
            None => (false, w[0].as_str()),
        };
        let Some(group) = Group::parse(type_word) else {
            errors.push(format!("{place}: unknown type {:?}", w[0]));
            continue;
        };
        let (Some(control), Some(target)) = (w.get(1), w.get(2)) else {
            errors.push(format!("{place}: incomplete rule {line:?}"));
            continue;
        };
        match control.as_str() {
            "include" => lines.push(Line::Include(group, target.clone())),
            "substack" => {
                match Control::parse("[success=ok new_authtok_reqd=ok ignore=ignore default=bad]") {
                    Ok(c) => lines.push(Line::Substack(group, c, target.clone())),
                    Err(e) => errors.push(format!("{place}: {e}")),
                }
            }
            c => match Control::parse(c) {
                Ok(control) => lines.push(Line::Rule(Rule {
                    file: path.to_path_buf(),
                    line: number,
                    text: w.join(" "),
                    group,
                    dash,
                    control,
                    module: target.clone(),
                    args: w[3..].to_vec(),
                })),
                Err(e) => errors.push(format!("{place}: {e}")),
            },
        }
    }
    (lines, errors)
}

/// Reads files on behalf of [`expand`], remembering what could not be read.
struct Reader<'a> {
    pam_dir: &'a Path,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn resolve(&self, name: &str) -> PathBuf {
        if name.starts_with('/') {
            PathBuf::from(name)
        } else {
            self.pam_dir.join(name)
        }
    }

    /// The `group` stack of `path`, includes flattened the way libpam does.
    fn expand(&mut self, path: &Path, group: Group, depth: usize) -> Vec<Node> {
        if depth > MAX_DEPTH {
            self.errors.push(format!(
                "{}: includes nested deeper than {MAX_DEPTH} (a loop?)",
                path.display()
            ));
            return Vec::new();
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.errors
                    .push(format!("cannot read {}: {e}", path.display()));
                return Vec::new();
            }
        };
        let (lines, errors) = parse_file(path, &text);
        self.errors.extend(errors);
        let mut nodes = Vec::new();
        for line in lines {
            match line {
                Line::IncludeAll(f) => {
                    let p = self.resolve(&f);
                    nodes.extend(self.expand(&p, group, depth + 1));
                }
                Line::Include(g, f) if g == group => {
                    let p = self.resolve(&f);
                    nodes.extend(self.expand(&p, group, depth + 1));
                }
                Line::Substack(g, control, f) if g == group => {
                    let p = self.resolve(&f);
                    let inner = self.expand(&p, group, depth + 1);
                    nodes.push(Node::Substack {
                        control,
                        nodes: inner,
                    });
                }
                Line::Rule(r) if r.group == group => nodes.push(Node::Rule(r)),
                _ => {}
            }
        }
        nodes
    }
}

fn rules(nodes: &[Node]) -> Vec<&Rule> {
    let mut out = Vec::new();
    for n in nodes {
        match n {
            Node::Rule(r) => out.push(r),
            Node::Substack { nodes, .. } => out.extend(rules(nodes)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Evaluating a stack.

/// The logins the doctor imagines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// A right, active app password for this service, of a user who has app passwords.
    AppPassword,
    /// The account password, of a user who has app passwords.
    AccountPassword,
    /// The account password, of a user who has no app password at all.
    AccountPasswordNoAppPasswords,
    /// A password that is neither.
    Wrong,
}

/// What a module answers in a case; `None`: the doctor does not know it (neutral).
fn answer(rule: &Rule, case: Case) -> Option<Ret> {
    Some(match (rule.name(), case) {
        (MODULE, Case::AppPassword) => Ret::Success,
        (MODULE, Case::AccountPasswordNoAppPasswords) => Ret::UserUnknown,
        (MODULE, _) => Ret::AuthErr,
        ("pam_unix.so", Case::AccountPassword | Case::AccountPasswordNoAppPasswords) => {
            Ret::Success
        }
        ("pam_unix.so", _) => Ret::AuthErr,
        ("pam_permit.so", _) => Ret::Success,
        ("pam_deny.so", _) => Ret::AuthErr,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impression {
    Undecided,
    Positive,
    Negative,
}

/// libpam's `_pam_dispatch_aux`, for the return values the doctor reasons about: whether
/// the stack ends in success.
fn evaluate(nodes: &[Node], case: Case) -> bool {
    let (impression, status) = run_stack(nodes, case);
    impression == Impression::Positive && status == Ret::Success
}

fn run_stack(nodes: &[Node], case: Case) -> (Impression, Ret) {
    let mut impression = Impression::Undecided;
    let mut status = Ret::AuthErr;
    let mut skip = 0;
    for node in nodes {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let (ret, control) = match node {
            Node::Rule(r) => (answer(r, case).unwrap_or(Ret::Ignore), &r.control),
            Node::Substack { control, nodes } => {
                let (imp, st) = run_stack(nodes, case);
                let ret = match imp {
                    Impression::Undecided => Ret::Ignore,
                    _ => st,
                };
                (ret, control)
            }
        };
        match control.action(ret) {
            Action::Ignore => {}
            Action::Reset => {
                impression = Impression::Undecided;
                status = Ret::AuthErr;
            }
            action @ (Action::Ok | Action::Done) => {
                let undecided_or_good = impression == Impression::Undecided
                    || (impression == Impression::Positive && status == Ret::Success);
                if undecided_or_good && ret != Ret::Ignore {
                    impression = Impression::Positive;
                    status = ret;
                }
                if impression != Impression::Negative && action == Action::Done {
                    return (impression, status);
                }
            }
            action @ (Action::Bad | Action::Die) => {
                if impression != Impression::Negative {
                    impression = Impression::Negative;
                    status = if ret == Ret::Success {
                        Ret::AuthErr
                    } else {
                        ret
                    };
                }
                if action == Action::Die {
                    return (impression, status);
                }
            }
            Action::Jump(n) => skip = n,
        }
    }
    (impression, status)
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Checks one service, or every service that uses pam_apppass.
pub fn run(opts: &Options) -> Result<Vec<Report>, DoctorError> {
    if let Some(s) = &opts.service {
        if s.is_empty() || s.contains('/') || s == "." || s == ".." {
            return Err(DoctorError::BadService(s.clone()));
        }
    }
    if let Some(file) = &opts.file {
        std::fs::metadata(file).map_err(|e| DoctorError::Read(file.clone(), e))?;
        let service = opts.service.clone().unwrap_or_else(|| {
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        return Ok(vec![check_service(opts, &service, file)]);
    }
    if let Some(service) = &opts.service {
        let file = opts.pam_dir.join(service);
        if file.exists() {
            return Ok(vec![check_service(opts, service, &file)]);
        }
        // libpam falls back to "other" for a service without a file.
        let other = opts.pam_dir.join("other");
        let mut report = check_service(opts, service, &other);
        report.findings.insert(
            0,
            Finding {
                level: Level::Warning,
                text: format!(
                    "{} does not exist: libpam uses {} for {service}",
                    file.display(),
                    other.display()
                ),
            },
        );
        return Ok(vec![report]);
    }
    let entries =
        std::fs::read_dir(&opts.pam_dir).map_err(|e| DoctorError::Read(opts.pam_dir.clone(), e))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        // common-* are included by services, not services themselves.
        .filter(|n| !n.starts_with("common-") && !n.starts_with('.') && !n.ends_with('~'))
        .collect();
    names.sort();
    let mut reports = Vec::new();
    for name in names {
        let file = opts.pam_dir.join(&name);
        let mut reader = Reader {
            pam_dir: &opts.pam_dir,
            errors: Vec::new(),
        };
        let auth = reader.expand(&file, Group::Auth, 0);
        if rules(&auth).iter().any(|r| r.is_apppass()) {
            reports.push(check_service(opts, &name, &file));
        }
    }
    if reports.is_empty() {
        let mut report = Report {
            service: "(any)".into(),
            file: opts.pam_dir.clone(),
            findings: Vec::new(),
        };
        report.push(
            Level::Problem,
            format!(
                "no service in {} has {MODULE} in its auth stack: install one of the files \
                 shipped in apppass's pam.d/ (see README, \"Dovecot and OpenSSH\"), or name \
                 a service: apppass doctor SERVICE",
                opts.pam_dir.display()
            ),
        );
        reports.push(report);
    }
    Ok(reports)
}

fn check_service(opts: &Options, service: &str, file: &Path) -> Report {
    let mut report = Report {
        service: service.to_string(),
        file: file.to_path_buf(),
        findings: Vec::new(),
    };
    let mut reader = Reader {
        pam_dir: &opts.pam_dir,
        errors: Vec::new(),
    };
    let auth = reader.expand(file, Group::Auth, 0);
    let mut elsewhere: Vec<(Group, Rule)> = Vec::new();
    for group in [Group::Account, Group::Password, Group::Session] {
        let nodes = reader.expand(file, group, 0);
        for r in rules(&nodes) {
            if r.is_apppass() {
                elsewhere.push((group, r.clone()));
            }
        }
    }
    let mut errors: Vec<String> = reader.errors;
    errors.dedup();
    for e in errors {
        report.push(
            Level::Problem,
            format!("{e} (libpam fails every login of a stack it cannot read)"),
        );
    }

    let all = rules(&auth);
    let ours: Vec<&Rule> = all.iter().copied().filter(|r| r.is_apppass()).collect();
    if apppass_proto::helper::SERVICES.contains(&service) {
        // apppassd's own stacks prove a person's account password: the one place where
        // the module must never be.
        for r in &ours {
            report.push(
                Level::Problem,
                format!(
                    "{}: {MODULE} must not be in the {service} stack: it proves the account                      password before an app password is made, and an app password must never                      make the next one (apppassd refuses them there, reason=loopback); remove                      this line",
                    r.place()
                ),
            );
        }
        if ours.is_empty() {
            report.push(
                Level::Ok,
                format!("{service} proves account passwords, without {MODULE}"),
            );
        }
        for r in &all {
            if r.text.split_whitespace().any(|w| w == "nullok") {
                report.push(
                    Level::Warning,
                    format!(
                        "{}: nullok lets an empty account password prove a person: remove it",
                        r.place()
                    ),
                );
            }
        }
        return report;
    }
    for (group, r) in &elsewhere {
        report.push(
            Level::Problem,
            format!(
                "{}: {MODULE} in the {group:?} group does nothing there: it only authenticates; \
                 put it in the auth group (\"auth ...\")",
                r.place(),
            ),
        );
    }
    if ours.is_empty() {
        report.push(
            Level::Problem,
            format!(
                "{MODULE} is not in the auth stack of {service}, so app passwords do not work \
                 for it: add \"auth required {MODULE}\" (app passwords only) or \"auth sufficient \
                 {MODULE}\" in front of the account password (migration); the files in \
                 apppass's pam.d/ are ready to use"
            ),
        );
        return report;
    }

    for r in &ours {
        report.push(
            Level::Ok,
            format!("{MODULE} is in the auth stack: {}: {}", r.place(), r.text),
        );
        if r.file != file {
            let shared = r
                .file
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("common-"));
            let level = if shared { Level::Warning } else { Level::Info };
            let why = if shared {
                let all = includers(&opts.pam_dir, &r.file);
                let risky: Vec<String> = all
                    .iter()
                    .filter_map(|s| grants(s).map(|g| format!("{s}: {g}")))
                    .collect();
                format!(
                    ": every service that includes that file ({}) then checks app passwords, \
                     each with its own name as the scope{}; prefer the service's own file",
                    if all.is_empty() {
                        "login, su, sudo, ...".to_string()
                    } else {
                        all.join(", ")
                    },
                    if risky.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ". An app password for one of them, or for *, opens it: {}",
                            risky.join("; ")
                        )
                    }
                )
            } else {
                String::new()
            };
            report.push(
                level,
                format!(
                    "it comes from {}, which {service} includes{why}",
                    r.file.display()
                ),
            );
        }
        check_module_file(opts, r, &mut report);
        check_arguments(r, &mut report);
    }

    // Scope.
    let mut scopes = BTreeSet::new();
    for r in &ours {
        let explicit = r
            .args
            .iter()
            .rev()
            .find_map(|a| a.strip_prefix("service="))
            .map(str::to_string);
        let scope = explicit.clone().unwrap_or_else(|| service.to_string());
        let from = if explicit.is_some() {
            "its service= argument"
        } else {
            "the PAM service name"
        };
        if scopes.insert(scope.clone()) {
            report.push(
                Level::Info,
                format!(
                    "scope: {scope} ({from}): app passwords for it are made with \
                     apppass add --user USER --service {scope}"
                ),
            );
            if let Some(what) = grants(service).or_else(|| grants(&scope)) {
                report.push(
                    Level::Warning,
                    format!(
                        "{service} reaches {MODULE} ({}): an app password scoped to {scope}, \
                         or to *, opens {service}, which gives {what}. Only root and \
                         admin_group make such passwords unless services in apppass.conf \
                         lists {scope}; take {MODULE} out of {service}'s stack{} unless that \
                         is what you want",
                        r.place(),
                        if r.file != file {
                            format!(" (it comes from {})", r.file.display())
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        }
        if explicit.is_none() && service == "dovecot" {
            report.push(
                Level::Warning,
                "Dovecot uses the PAM service \"dovecot\" unless its passdb says args = %s: then \
                 one app password opens IMAP, POP3 and submission alike. For one scope per \
                 protocol set passdb { driver = pam; args = %s } and install this file as \
                 /etc/pam.d/imap, pop3 and submission",
            );
        }
        if explicit.is_none() && service == "other" {
            report.push(
                Level::Warning,
                "\"other\" is libpam's fallback for every service without its own file: the \
                 scope is then each such service's name",
            );
        }
    }

    // Mode: what the stack does with each kind of password.
    let app = evaluate(&auth, Case::AppPassword);
    let account = evaluate(&auth, Case::AccountPassword);
    let newcomer = evaluate(&auth, Case::AccountPasswordNoAppPasswords);
    let wrong = evaluate(&auth, Case::Wrong);
    let neutral: BTreeSet<&str> = all
        .iter()
        .filter(|r| answer(r, Case::Wrong).is_none())
        .map(|r| r.name())
        .collect();
    if wrong {
        report.push(
            Level::Problem,
            "mode: a WRONG password logs in: the stack ends in success whatever pam_apppass \
             and pam_unix say (a pam_permit after a \"sufficient\" pam_apppass?). Make \
             pam_apppass \"required\", or follow it with pam_unix",
        );
    } else if !app {
        report.push(
            Level::Problem,
            "mode: a right app password is REFUSED: another module in the stack must succeed \
             too (a \"required\" pam_unix next to a \"required\" pam_apppass asks for both \
             passwords in one). Use \"auth sufficient pam_apppass.so\" followed by pam_unix, \
             or pam_apppass alone",
        );
    } else {
        let mode = match (account, newcomer) {
            (false, false) => {
                "app passwords only: an app password logs in; the account password is refused"
            }
            (true, true) => {
                "migration: an app password or the account password logs in; use fail2ban's \
                 migration mode (see README, \"fail2ban\")"
            }
            (false, true) => {
                "per user: users with app passwords must use them; users without any still log \
                 in with the account password"
            }
            (true, false) => {
                "unusual: the account password works for users who have app passwords, not for \
                 those who have none"
            }
        };
        report.push(Level::Ok, format!("mode: {mode}"));
    }
    if !neutral.is_empty() {
        report.push(
            Level::Info,
            format!(
                "taken as neither accepting nor refusing a password: {}",
                neutral.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    }

    // The database each pam_apppass line would use.
    let mut seen = BTreeSet::new();
    for r in &ours {
        let Ok(parsed) = args::parse(&r.args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
        else {
            continue;
        };
        if seen.insert((parsed.socket.clone(), parsed.conf.clone())) {
            check_daemon(opts, &parsed, &scopes, &mut report);
        }
    }
    report
}

fn check_module_file(opts: &Options, r: &Rule, report: &mut Report) {
    let path = if r.module.starts_with('/') {
        Some(PathBuf::from(&r.module))
    } else {
        opts.module_dirs
            .iter()
            .map(|d| d.join(&r.module))
            .find(|p| p.exists())
    };
    match path {
        Some(p) if p.exists() => {}
        _ => {
            let looked = if r.module.starts_with('/') {
                r.module.clone()
            } else {
                opts.module_dirs
                    .iter()
                    .map(|d| d.join(&r.module).display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            let effect = if r.dash {
                "the leading '-' makes libpam skip it silently, so app passwords never work"
            } else {
                "libpam cannot load it and fails the logins that reach it"
            };
            report.push(
                Level::Problem,
                format!(
                    "{}: {} is not installed ({looked}): {effect}; install apppass's module \
                     there or give its full path",
                    r.place(),
                    r.module
                ),
            );
        }
    }
}

fn check_arguments(r: &Rule, report: &mut Report) {
    let argv: Vec<&[u8]> = r.args.iter().map(|a| a.as_bytes()).collect();
    match args::parse(&argv) {
        Err(e) => report.push(
            Level::Problem,
            format!(
                "{}: bad argument: {e}: the module answers PAM_SERVICE_ERR to every login",
                r.place()
            ),
        ),
        Ok(parsed) => {
            for unknown in parsed.unknown {
                report.push(
                    Level::Warning,
                    format!(
                        "{}: unknown argument {unknown:?} is ignored (known: socket=, conf=, \
                         service=, timeout=, debug, use_first_pass, try_first_pass)",
                        r.place()
                    ),
                );
            }
            for obsolete in parsed.obsolete {
                report.push(
                    Level::Problem,
                    format!(
                        "{}: {obsolete} is obsolete and ignored: apppassd owns the store (its \
                         db setting in the configuration); remove the argument (the module logs \
                         a warning at every login until then)",
                        r.place()
                    ),
                );
            }
        }
    }
}

fn check_daemon(
    opts: &Options,
    parsed: &args::ModuleArgs,
    scopes: &BTreeSet<String>,
    report: &mut Report,
) {
    let (conf_path, explicit) = match &parsed.conf {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(conf::DEFAULT_CONFIG), false),
    };
    if opts.as_root && (explicit || conf_path.exists()) {
        if let Err(e) = apppass_proto::trust::check_root_only(&conf_path) {
            report.push(
                Level::Problem,
                format!(
                    "configuration {}: {e} (the module refuses it: PAM_SERVICE_ERR)",
                    conf_path.display()
                ),
            );
        }
    }
    let settings = match ClientSettings::load(&conf_path, explicit) {
        Ok(s) => s,
        Err(e) => {
            report.push(
                Level::Problem,
                format!("{e} (the module answers PAM_SERVICE_ERR to every login)"),
            );
            return;
        }
    };
    // apppassd's groups and the services people may choose, as the same file says.
    let policy_config = apppass_core::config::Config::load(&conf_path, explicit)
        .map(|l| l.config)
        .unwrap_or_default();
    check_choice(&policy_config, &conf_path, scopes, report);
    let socket = parsed.socket.clone().unwrap_or(settings.socket.clone());
    let from = if parsed.socket.is_some() {
        "its socket= argument".to_string()
    } else if explicit || conf_path.exists() {
        format!("the configuration {}", conf_path.display())
    } else {
        "the default".to_string()
    };
    report.push(
        Level::Info,
        format!("apppassd's socket: {} (from {from})", socket.display()),
    );
    let timeout = parsed.timeout.unwrap_or(settings.timeout);
    let mut client = match crate::daemon::connect(&socket, timeout, &settings.user) {
        Ok(c) => c,
        Err(e) => {
            report.push(
                Level::Problem,
                format!(
                    "{e}: every login through pam_apppass fails with PAM_AUTHINFO_UNAVAIL; start it (systemctl start apppassd.socket, or apppassd --user {} in the foreground)",
                    settings.user
                ),
            );
            return;
        }
    };
    let owner = std::fs::metadata(&socket)
        .map(|m| format!("uid {}", m.uid()))
        .unwrap_or_else(|e| format!("nobody known ({e})"));
    let status = match client.call(&Request::Status) {
        Ok(Response::Status(s)) => s,
        Ok(other) => {
            report.push(
                Level::Problem,
                format!("apppassd answered status with {other:?}"),
            );
            return;
        }
        Err(e) => {
            report.push(
                Level::Problem,
                format!("{e} (logins fail: PAM_AUTHINFO_UNAVAIL)"),
            );
            return;
        }
    };
    report.push(
        Level::Ok,
        format!(
            "apppassd answers: version {}, pid {}, running as uid {}, socket owned by {owner}",
            status.version, status.pid, status.daemon_uid
        ),
    );
    if status.daemon_uid == 0 {
        report.push(
            Level::Warning,
            format!(
                "apppassd runs as root: run it as its own user ({}; systemd's unit does)",
                settings.user
            ),
        );
    }
    if let Some(why) = &status.store_error {
        report.push(
            Level::Problem,
            format!(
                "apppassd cannot use its store {}: {why}: it answers every login \"unavailable\" (PAM_AUTHINFO_UNAVAIL) until that is fixed",
                status.store
            ),
        );
        return;
    }
    let version = status.schema_version.unwrap_or(0);
    report.push(
        Level::Ok,
        format!("store: {} (schema version {version})", status.store),
    );
    if let Some(w) = &status.store_warning {
        report.push(Level::Warning, format!("store: {w}"));
    }
    if !status.you.admin {
        report.push(
            Level::Warning,
            "not run as root or the admin group: the app passwords of the scope were not counted",
        );
        return;
    }
    let rows = match client.call(&Request::List {
        user: None,
        all: true,
    }) {
        Ok(Response::Passwords(rows)) => rows,
        Ok(Response::Error { message, .. }) => {
            report.push(Level::Problem, format!("store: {message}"));
            return;
        }
        Ok(_) | Err(_) => return,
    };
    for scope in scopes {
        let active = rows
            .iter()
            .filter(|r| policy::scope_allows(&r.service, scope, &policy_config.groups))
            .filter(|r| r.status == "active")
            .count();
        if active == 0 {
            report.push(
                Level::Warning,
                format!(
                    "no active app password for {scope} yet: make one with apppass add \
                     --user USER --service {scope}"
                ),
            );
        } else {
            report.push(
                Level::Ok,
                format!("{active} active app password(s) for {scope} (or every service)"),
            );
        }
    }
}

/// Whether people who are not admins may make app passwords that open each scope (the
/// `services` list, groups resolved), and a warning where that gives root.
fn check_choice(
    config: &apppass_core::config::Config,
    conf_path: &Path,
    scopes: &BTreeSet<String>,
    report: &mut Report,
) {
    for scope in scopes {
        let through: Vec<&str> = config
            .services
            .iter()
            .filter(|s| policy::scope_allows(s, scope, &config.groups))
            .map(String::as_str)
            .collect();
        if through.is_empty() {
            report.push(
                Level::Info,
                format!(
                    "only root and admin_group make app passwords that open {scope}: services \
                     in {} does not list it",
                    conf_path.display()
                ),
            );
        } else if let Some(what) = grants(scope) {
            report.push(
                Level::Warning,
                format!(
                    "every user may make app passwords that open {scope} ({what}): services in \
                     {} lists {}",
                    conf_path.display(),
                    through.join(", ")
                ),
            );
        } else {
            report.push(
                Level::Info,
                format!(
                    "people make their own app passwords for {scope} with --service {}",
                    through.join(" or --service ")
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output.

/// The report as the CLI prints it.
pub fn render(reports: &[Report]) -> String {
    let mut out = String::new();
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{} ({})\n", r.service, r.file.display()));
        for f in &r.findings {
            out.push_str(&format!("  {:<8} {}\n", f.level.tag(), f.text));
        }
        let problems = r.count(Level::Problem);
        let warnings = r.count(Level::Warning);
        let verdict = if problems > 0 { "NOT READY" } else { "ready" };
        out.push_str(&format!(
            "  => {}: {verdict} ({problems} problem(s), {warnings} warning(s))\n",
            r.service
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(files: &[(&str, &str)], service: &str) -> (tempfile::TempDir, Vec<Node>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut reader = Reader {
            pam_dir: dir.path(),
            errors: Vec::new(),
        };
        let nodes = reader.expand(&dir.path().join(service), Group::Auth, 0);
        assert!(reader.errors.is_empty(), "{:?}", reader.errors);
        (dir, nodes)
    }

    /// (app password, account password, account password without app passwords, wrong)
    fn outcomes(files: &[(&str, &str)]) -> (bool, bool, bool, bool) {
        let (_dir, nodes) = stack(files, "svc");
        (
            evaluate(&nodes, Case::AppPassword),
            evaluate(&nodes, Case::AccountPassword),
            evaluate(&nodes, Case::AccountPasswordNoAppPasswords),
            evaluate(&nodes, Case::Wrong),
        )
    }

    const DEBIAN_COMMON_AUTH: &str = "auth [success=1 default=ignore] pam_unix.so nullok\n\
        auth requisite pam_deny.so\nauth required pam_permit.so\nauth optional pam_cap.so\n";

    #[test]
    fn shipped_shapes() {
        let only = "auth required pam_apppass.so\n@include common-account\n";
        let account = "account required pam_unix.so\n";
        assert_eq!(
            outcomes(&[("svc", only), ("common-account", account)]),
            (true, false, false, false)
        );
        let migration =
            "auth sufficient pam_apppass.so\nauth required pam_unix.so try_first_pass\n";
        assert_eq!(outcomes(&[("svc", migration)]), (true, true, true, false));
        let sshd = "auth sufficient pam_apppass.so\n@include common-auth\n";
        assert_eq!(
            outcomes(&[("svc", sshd), ("common-auth", DEBIAN_COMMON_AUTH)]),
            (true, true, true, false)
        );
        let jump = "auth [success=done default=ignore] pam_apppass.so\n@include common-auth\n";
        assert_eq!(
            outcomes(&[("svc", jump), ("common-auth", DEBIAN_COMMON_AUTH)]),
            (true, true, true, false)
        );
        let per_user = "auth [success=done user_unknown=ignore default=die] pam_apppass.so\n\
                        auth required pam_unix.so\n";
        assert_eq!(outcomes(&[("svc", per_user)]), (true, false, true, false));
    }

    #[test]
    fn broken_shapes() {
        // Both required: the one password would have to be both.
        let both = "auth required pam_apppass.so\nauth required pam_unix.so\n";
        assert_eq!(outcomes(&[("svc", both)]), (false, false, false, false));
        // sufficient, then nothing that refuses.
        let open = "auth sufficient pam_apppass.so\nauth required pam_permit.so\n";
        assert_eq!(outcomes(&[("svc", open)]), (true, true, true, true));
        // sufficient and nothing after: libpam fails a stack with no decision.
        let alone = "auth sufficient pam_apppass.so\n";
        assert_eq!(outcomes(&[("svc", alone)]), (true, false, false, false));
        // After a requisite pam_unix, pam_apppass is never reached with an app password.
        let after = "auth requisite pam_unix.so\nauth sufficient pam_apppass.so\n";
        assert!(!outcomes(&[("svc", after)]).0);
    }

    #[test]
    fn substacks_end_on_their_own() {
        let files = [
            ("svc", "auth substack inner\nauth required pam_deny.so\n"),
            (
                "inner",
                "auth sufficient pam_apppass.so\nauth required pam_unix.so\n",
            ),
        ];
        // "done" inside the substack ends the substack only: the deny after it still runs.
        assert_eq!(outcomes(&files), (false, false, false, false));
    }

    #[test]
    fn lines_comments_continuations_and_brackets() {
        let text = "# comment\n\n-auth   [success=done \\\n default=ignore]  pam_apppass.so  service=imap # trailing\n\
                    AUTH required pam_unix.so\n";
        let (lines, errors) = parse_file(Path::new("f"), text);
        assert!(errors.is_empty(), "{errors:?}");
        let Line::Rule(r) = &lines[0] else { panic!() };
        assert!(r.dash && r.is_apppass() && r.line == 3);
        assert_eq!(r.args, ["service=imap"]);
        assert_eq!(r.control.action(Ret::Success), Action::Done);
        assert_eq!(r.control.action(Ret::UserUnknown), Action::Ignore);
        let Line::Rule(r) = &lines[1] else { panic!() };
        assert_eq!(r.group, Group::Auth);
        let (_, errors) = parse_file(Path::new("f"), "auth\nbogus required x.so\nauth [a] x.so\n");
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn modules_named_without_a_path_are_looked_up_like_libpam_does() {
        let (dir, nodes) = stack(&[("svc", "-auth required pam_apppass.so\n")], "svc");
        let rule = rules(&nodes)[0].clone();
        let mut report = Report {
            service: "svc".into(),
            file: dir.path().join("svc"),
            findings: Vec::new(),
        };
        let mut opts = Options {
            pam_dir: dir.path().to_path_buf(),
            service: None,
            file: None,
            module_dirs: vec![dir.path().join("security")],
            as_root: false,
        };
        check_module_file(&opts, &rule, &mut report);
        assert_eq!(report.count(Level::Problem), 1, "{report:?}");
        assert!(report.findings[0].text.contains("skip it silently"));
        std::fs::create_dir(dir.path().join("security")).unwrap();
        std::fs::write(dir.path().join("security/pam_apppass.so"), "").unwrap();
        report.findings.clear();
        check_module_file(&opts, &rule, &mut report);
        assert!(report.findings.is_empty(), "{report:?}");
        opts.module_dirs.clear();
        check_module_file(&opts, &rule, &mut report);
        assert_eq!(report.count(Level::Problem), 1);
    }

    #[test]
    fn include_loops_are_reported_not_followed_forever() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "@include b\n").unwrap();
        std::fs::write(dir.path().join("b"), "@include a\n").unwrap();
        let mut reader = Reader {
            pam_dir: dir.path(),
            errors: Vec::new(),
        };
        reader.expand(&dir.path().join("a"), Group::Auth, 0);
        assert!(reader.errors.iter().any(|e| e.contains("a loop?")));
    }
}
