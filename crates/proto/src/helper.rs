//! apppassd and its PAM helper (`apppass-pam-helper`), over the helper's standard input
//! and output, in the same frames as the socket: the helper sends the stack's
//! conversation ([`FromHelper::Conversation`]) and at last its [`Verdict`]; apppassd
//! answers each conversation with a [`crate::Request::Answer`].
//!
//! apppassd runs unprivileged and cannot read /etc/shadow; the helper is the one
//! privileged step, run once per proof, as cockpit-session and unix_chkpwd are.

use crate::message::{MAX_PROMPTS, Prompt, PromptStyle};
use crate::wire::{Decoder, Encoder, WireError};

/// The PAM services the helper runs, and nothing else: apppassd's own stacks.
pub const SERVICES: [&str; 2] = ["apppass", "apppass-portal"];

/// What came of a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// pam_authenticate and pam_acct_mgmt both succeeded.
    Proved,
    /// The stack refused (a wrong password, a wrong code); PAM's error text.
    Failed(String),
    /// The account has no password to prove anything with (locked, or keys or single
    /// sign-on only).
    NoPassword,
    /// The account password has expired (PAM_NEW_AUTHTOK_REQD).
    PasswordExpired,
    /// The account itself has expired or is not allowed in (pam_acct_mgmt).
    AccountRefused(String),
    /// The stack could not run (a missing file, a module that failed to load).
    Unavailable(String),
}

/// What to prove, when the helper is a socket's service (`--socket`, started by
/// systemd per connection): the first frame apppassd sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    pub service: String,
    pub user: String,
    pub rhost: Option<String>,
}

const BEGIN: u8 = 3;

impl Begin {
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut e = Encoder::new(BEGIN);
        e.str(&self.service)
            .str(&self.user)
            .opt_str(self.rhost.as_deref());
        e.finish()
    }

    pub fn decode(body: &[u8]) -> Result<Begin, WireError> {
        let (k, mut d) = Decoder::new(body)?;
        if k != BEGIN {
            return Err(WireError::Malformed("expected what to prove"));
        }
        let begin = Begin {
            service: d.string()?,
            user: d.string()?,
            rhost: d.opt_string()?,
        };
        d.finish()?;
        Ok(begin)
    }
}

/// A message from the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromHelper {
    Conversation(Vec<Prompt>),
    Done(Verdict),
}

const CONVERSATION: u8 = 1;
const DONE: u8 = 2;

impl FromHelper {
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut e;
        match self {
            FromHelper::Conversation(prompts) => {
                e = Encoder::new(CONVERSATION);
                e.len(prompts.len());
                for p in prompts {
                    e.u8(p.style.code()).str(&p.text);
                }
            }
            FromHelper::Done(v) => {
                e = Encoder::new(DONE);
                let (code, text) = match v {
                    Verdict::Proved => (0, ""),
                    Verdict::Failed(t) => (1, t.as_str()),
                    Verdict::NoPassword => (2, ""),
                    Verdict::PasswordExpired => (3, ""),
                    Verdict::AccountRefused(t) => (4, t.as_str()),
                    Verdict::Unavailable(t) => (5, t.as_str()),
                };
                e.u8(code).str(text);
            }
        }
        e.finish()
    }

    pub fn decode(body: &[u8]) -> Result<FromHelper, WireError> {
        let (k, mut d) = Decoder::new(body)?;
        let message = match k {
            CONVERSATION => {
                let n = d.len(5)?;
                if n == 0 || n > MAX_PROMPTS {
                    return Err(WireError::Malformed("bad number of prompts"));
                }
                let mut prompts = Vec::with_capacity(n);
                for _ in 0..n {
                    prompts.push(Prompt {
                        style: PromptStyle::from_code(d.u8()?)?,
                        text: d.string()?,
                    });
                }
                FromHelper::Conversation(prompts)
            }
            DONE => {
                let code = d.u8()?;
                let text = d.string()?;
                FromHelper::Done(match code {
                    0 => Verdict::Proved,
                    1 => Verdict::Failed(text),
                    2 => Verdict::NoPassword,
                    3 => Verdict::PasswordExpired,
                    4 => Verdict::AccountRefused(text),
                    5 => Verdict::Unavailable(text),
                    _ => return Err(WireError::Malformed("unknown verdict")),
                })
            }
            _ => return Err(WireError::Malformed("unknown helper message")),
        };
        d.finish()?;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            FromHelper::Conversation(vec![Prompt {
                style: PromptStyle::EchoOn,
                text: "One-time password (OATH) for `alice': ".into(),
            }]),
            FromHelper::Done(Verdict::Proved),
            FromHelper::Done(Verdict::Failed("Authentication failure".into())),
            FromHelper::Done(Verdict::NoPassword),
            FromHelper::Done(Verdict::PasswordExpired),
            FromHelper::Done(Verdict::AccountRefused("expired".into())),
            FromHelper::Done(Verdict::Unavailable("no stack".into())),
        ] {
            assert_eq!(FromHelper::decode(&m.encode()).unwrap(), m);
        }
        assert!(FromHelper::decode(&FromHelper::Conversation(vec![]).encode()).is_err());
        let begin = Begin {
            service: "apppass".into(),
            user: "alice".into(),
            rhost: Some("192.0.2.1".into()),
        };
        assert_eq!(Begin::decode(&begin.encode()).unwrap(), begin);
        assert!(Begin::decode(&FromHelper::Done(Verdict::Proved).encode()).is_err());
    }
}
