//! The pages, as compile-time checked templates (maud escapes every value it inserts).
//! No inline script or style: the Content-Security-Policy forbids them.

use apppass_core::time;
use apppass_proto::{EventInfo, PasswordInfo, Prompt, PromptStyle};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::text as t;

/// What the header shows of the signed-in person.
pub struct Nav<'a> {
    pub site: &'a str,
    pub user: Option<&'a str>,
    pub csrf: Option<&'a str>,
}

fn when(t: i64) -> String {
    time::format_iso8601(t).replace('T', " ")
}

pub fn layout(nav: &Nav, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (nav.site) }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/copy.js" defer {}
            }
            body {
                header {
                    p.site { (nav.site) }
                    @if let (Some(user), Some(csrf)) = (nav.user, nav.csrf) {
                        nav aria-label=(t::NAV) {
                            a href="/" { (t::PASSWORDS) }
                            " "
                            a href="/new" { (t::CREATE) }
                            " "
                            a href="/log" { (t::LOG) }
                        }
                        form.signout method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(csrf);
                            span { (user) " " }
                            button type="submit" { (t::SIGN_OUT) }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn notice(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message { p.notice role="status" { (m) } }
    }
}

pub fn error(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message { p.error role="alert" { (m) } }
    }
}

pub fn sign_in(message: Option<&str>, user: &str) -> Markup {
    html! {
        (error(message))
        p { (t::SIGN_IN_INTRO) }
        form method="post" action="/signin" {
            p {
                label for="user" { (t::USER) }
                input #user type="text" name="user" value=(user) autocomplete="username" autocapitalize="none" spellcheck="false" required autofocus;
            }
            p {
                label for="password" { (t::PASSWORD) }
                input #password type="password" name="password" autocomplete="current-password" required;
            }
            p { button type="submit" { (t::SIGN_IN) } }
        }
    }
}

/// A further step of the PAM stack's conversation: each prompt in turn, as the stack
/// wrote it; `action` is where the answers go (sign-in, or proof before creating).
pub fn conversation(action: &str, id: &str, csrf: Option<&str>, prompts: &[Prompt]) -> Markup {
    let first = prompts
        .iter()
        .position(|p| matches!(p.style, PromptStyle::EchoOff | PromptStyle::EchoOn));
    html! {
        form method="post" action=(action) {
            input type="hidden" name="pending" value=(id);
            @if let Some(c) = csrf { input type="hidden" name="csrf" value=(c); }
            @for (i, p) in prompts.iter().enumerate() {
                @let text = printable(&p.text);
                @match p.style {
                    PromptStyle::Info => p.notice { (text) },
                    PromptStyle::ErrorMsg => p.error role="alert" { (text) },
                    PromptStyle::EchoOff | PromptStyle::EchoOn => {
                        p {
                            label for=(format!("a{i}")) { (text) }
                            input id=(format!("a{i}")) name=(format!("a{i}"))
                                type=(if p.style == PromptStyle::EchoOff { "password" } else { "text" })
                                autocomplete="one-time-code" required autofocus[Some(i) == first];
                        }
                    }
                }
            }
            p { button type="submit" { (t::CONTINUE) } }
        }
    }
}

/// A PAM module's text without the terminal's control characters (escapes, bells).
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect()
}

fn status_cell(p: &PasswordInfo) -> Markup {
    html! {
        (p.status)
        @if p.expires_soon { " " strong.flag { (t::EXPIRES_SOON) } }
        br;
        small {
            @if p.networks.is_empty() { (t::NETWORKS_ANY) }
            @else { (t::NETWORKS_ONLY) " " (p.networks) }
        }
    }
}

fn last_use(p: &PasswordInfo) -> Markup {
    html! {
        @match p.last_used {
            None => em.flag { (t::NEVER_USED) },
            Some(at) => {
                (when(at))
                @if let Some(h) = &p.last_rhost { ", " (t::FROM) " " (h) }
                @if let Some(s) = &p.last_service { ", " (t::VIA) " " (s) }
                ", " (t::USED) " " (p.use_count) "×"
            }
        }
    }
}

/// `of`: whose they are when an admin looks at someone else's.
pub fn list(list: &[PasswordInfo], of: Option<&str>, admin: bool, message: Option<&str>) -> Markup {
    let query = of
        .map(|u| format!("?user={}", url_encode(u)))
        .unwrap_or_default();
    html! {
        (notice(message))
        @if let Some(u) = of { p.notice { (t::ADMIN_VIEWING) " " strong { (u) } } }
        p { (t::PASSWORDS_INTRO) }
        @if admin {
            form.find method="get" action="/" role="search" {
                label for="find" { (t::ADMIN_FIND) }
                input #find type="text" name="user" value=(of.unwrap_or(""));
                button type="submit" { (t::ADMIN_SHOW) }
            }
        }
        @if of.is_none() { p { a.button href="/new" { (t::CREATE) } } }
        @if list.is_empty() {
            p { (t::NONE_YET) }
        } @else {
            table {
                thead { tr {
                    th scope="col" { (t::SERVICE) } th scope="col" { (t::LABEL) }
                    th scope="col" { (t::CREATED) } th scope="col" { (t::EXPIRES) }
                    th scope="col" { (t::STATUS) } th scope="col" { (t::LAST_USE) }
                    th scope="col" { (t::ACTIONS) }
                } }
                tbody {
                    @for p in list {
                        tr {
                            td { (p.service) }
                            td { (p.label) }
                            td { (when(p.created)) }
                            td { (p.expires.map_or_else(|| t::NEVER.to_string(), when)) }
                            td { (status_cell(p)) }
                            td { (last_use(p)) }
                            td {
                                @if p.revoked.is_none() {
                                    a href=(format!("/revoke/{}{query}", p.id)) { (t::REVOKE) }
                                    " "
                                    a href=(format!("/networks/{}{query}", p.id)) { (t::NETWORKS_EDIT) }
                                    @if of.is_none() {
                                        " "
                                        a href=(format!("/regenerate/{}", p.id)) { (t::REGENERATE) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p { a href=(format!("/revoke-all{query}")) { (t::REVOKE_ALL) } }
        }
    }
}

pub fn confirm(
    what: Option<&str>,
    question: &str,
    action: &str,
    csrf: &str,
    hidden: &[(&str, String)],
    back: &str,
) -> Markup {
    html! {
        @if let Some(w) = what { p { strong { (w) } } }
        p { (question) }
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            @for (k, v) in hidden { input type="hidden" name=(k) value=(v); }
            button type="submit" { (t::REVOKE) }
            " "
            a href=(back) { (t::CANCEL) }
        }
    }
}

/// Whether to make a new secret for app password `id` in place of its old one.
pub struct RegenerateForm<'a> {
    pub what: &'a str,
    pub id: i64,
    pub csrf: &'a str,
    pub nonce: &'a str,
    pub ask_password: bool,
    pub message: Option<&'a str>,
}

pub fn regenerate(f: &RegenerateForm) -> Markup {
    html! {
        (error(f.message))
        p { strong { (f.what) } }
        p { (t::REGENERATE_CONFIRM) }
        form method="post" action="/regenerate" {
            input type="hidden" name="csrf" value=(f.csrf);
            input type="hidden" name="nonce" value=(f.nonce);
            input type="hidden" name="id" value=(f.id);
            @if f.ask_password {
                p { (t::REGENERATE_REAUTH) }
                p {
                    label for="password" { (t::ACCOUNT_PASSWORD) }
                    input #password type="password" name="password" autocomplete="current-password" required;
                }
            }
            button type="submit" { (t::REGENERATE) }
            " "
            a href="/" { (t::CANCEL) }
        }
    }
}

/// The source networks of one app password, to change.
pub fn networks(p: &PasswordInfo, csrf: &str, whose: Option<&str>, back: &str) -> Markup {
    html! {
        p { (p.service) @if !p.label.is_empty() { " · " (p.label) } }
        form method="post" action="/networks" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="id" value=(p.id);
            @if let Some(u) = whose { input type="hidden" name="user" value=(u); }
            p {
                label for="from" { (t::NETWORKS_TITLE) }
                input #from type="text" name="from" value=(p.networks) aria-describedby="from-hint" spellcheck="false";
                small #from-hint { (t::NETWORKS_HINT) " " (t::NETWORKS_EMPTY_HINT) }
            }
            button type="submit" { (t::SAVE) }
            " "
            a href=(back) { (t::CANCEL) }
        }
    }
}

pub struct CreateForm<'a> {
    pub csrf: &'a str,
    pub nonce: &'a str,
    pub services: &'a [String],
    pub expiries: &'a [(&'static str, &'static str)],
    pub ask_password: bool,
    pub message: Option<&'a str>,
    pub label: &'a str,
}

pub fn create(f: &CreateForm) -> Markup {
    html! {
        (error(f.message))
        form method="post" action="/new" {
            input type="hidden" name="csrf" value=(f.csrf);
            input type="hidden" name="nonce" value=(f.nonce);
            p {
                label for="service" { (t::SERVICE) }
                select #service name="service" {
                    @for s in f.services { option value=(s) { (s) } }
                }
            }
            p {
                label for="label" { (t::LABEL) }
                input #label type="text" name="label" value=(f.label) maxlength="64" aria-describedby="label-hint";
                small #label-hint { (t::LABEL_HINT) }
            }
            p {
                label for="expires" { (t::EXPIRY) }
                select #expires name="expires" {
                    option value="" { (t::EXPIRY_DEFAULT) }
                    @for (v, name) in f.expiries { option value=(v) { (name) } }
                }
            }
            p {
                label for="from" { (t::NETWORKS) }
                input #from type="text" name="from" aria-describedby="from-hint" spellcheck="false";
                small #from-hint { (t::NETWORKS_HINT) }
            }
            @if f.ask_password {
                p { (t::REAUTH) }
                p {
                    label for="password" { (t::ACCOUNT_PASSWORD) }
                    input #password type="password" name="password" autocomplete="current-password" required;
                }
            }
            p { button type="submit" { (t::CREATE_BUTTON) } }
        }
    }
}

/// The new password, this once, with what carries it to a device.
pub fn shown_once(
    password: &str,
    service: &str,
    label: &str,
    qr: Option<&str>,
    profile: Option<&str>,
) -> Markup {
    html! {
        p.notice role="status" { (t::SHOWN_ONCE) }
        p { (service) @if !label.is_empty() { " · " (label) } }
        p.secret {
            code #secret data-copy=(password) {
                @for (i, group) in password.split('-').enumerate() {
                    @if i > 0 { span.dash aria-hidden="true" { "-" } }
                    span.group { (group) }
                }
            }
            " "
            button.copy type="button" data-copy-from="secret" hidden { (t::COPY) }
        }
        @if let Some(svg) = qr {
            p { (t::QR_HINT) }
            // Made by profile::qr_svg from the password's QR matrix: numbers only.
            figure.qr { (PreEscaped(svg)) }
        }
        @if let Some(data) = profile {
            h2 { (t::PROFILE) }
            p { (t::PROFILE_HINT) }
            p { a.button download="mail.mobileconfig" href=(format!("data:application/x-apple-aspen-config;base64,{data}")) { (t::PROFILE) } }
        }
        p { a.button href="/" { (t::DONE) } }
    }
}

pub fn log(events: &[EventInfo], of: Option<&str>) -> Markup {
    html! {
        @if let Some(u) = of { p.notice { (t::ADMIN_VIEWING) " " strong { (u) } } }
        p { (t::LOG_INTRO) }
        @if events.is_empty() {
            p { (t::NO_EVENTS) }
        } @else {
            table {
                thead { tr {
                    th scope="col" { (t::TIME) } th scope="col" { (t::SERVICE) }
                    th scope="col" { (t::ADDRESS) } th scope="col" { (t::OUTCOME) }
                } }
                tbody {
                    @for e in events {
                        tr {
                            td { (when(e.time)) }
                            td { (e.service) }
                            td { (e.rhost.as_deref().unwrap_or("")) }
                            td { (e.outcome) @if let Some(r) = &e.reason { " (" (r) ")" } }
                        }
                    }
                }
            }
        }
    }
}

/// Percent-encodes a query value.
pub fn url_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
