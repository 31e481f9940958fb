//! What carries a new password to a device, all made in the response that shows it: the
//! QR code (inline SVG), Apple's `.mobileconfig` profile; and Thunderbird's autoconfig,
//! which carries no secret.

use apppass_core::config::Web;

/// Escapes text for XML content and attribute values.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// `text` as a QR code in SVG: one path of unit squares, four modules of quiet zone.
/// `None` if it does not fit a QR code (it always does for an app password).
pub fn qr_svg(text: &str, label: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let quiet = 4;
    let size = width + 2 * quiet;
    let mut path = String::with_capacity(width * width * 4);
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (x, y) = (i % width + quiet, i / width + quiet);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" width=\"{px}\" height=\"{px}\" role=\"img\" aria-label=\"{label}\" shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path fill=\"#000\" d=\"{path}\"/></svg>",
        px = size * 6,
        label = xml(label),
    ))
}

/// Ports where TLS starts at once (IMAPS, SMTPS); any other is STARTTLS.
fn implicit_tls(port: u16) -> bool {
    matches!(port, 993 | 465)
}

/// The mail settings profiles and autoconfig name, if the site configured them.
pub struct Mail<'a> {
    pub domain: &'a str,
    pub imap_host: &'a str,
    pub imap_port: u16,
    pub smtp_host: &'a str,
    pub smtp_port: u16,
    pub site: &'a str,
}

impl<'a> Mail<'a> {
    pub fn of(web: &'a Web) -> Option<Mail<'a>> {
        let imap_host = web.imap_host.as_deref()?;
        Some(Mail {
            domain: web.mail_domain.as_deref().unwrap_or(imap_host),
            imap_host,
            imap_port: web.imap_port,
            smtp_host: web.smtp_host.as_deref().unwrap_or(imap_host),
            smtp_port: web.smtp_port,
            site: &web.site_name,
        })
    }
}

/// A random UUID (version 4), as profiles want for each payload.
fn uuid() -> String {
    let mut b = [0u8; 16];
    // No randomness at all is not worth failing a page for: a fixed UUID only makes a
    // second profile replace the first.
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Apple's configuration profile for Mail: the account with its IMAP and SMTP settings
/// and `password`. Served only inside the page that shows the password.
pub fn mobileconfig(mail: &Mail, user: &str, password: &str) -> String {
    let address = format!("{user}@{}", mail.domain);
    let id = format!("{}.apppass.{}", reverse(mail.domain), user_id(user));
    let s = |v: &str| format!("<string>{}</string>", xml(v));
    let b = |v: bool| if v { "<true/>" } else { "<false/>" };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
<key>PayloadContent</key>
<array>
<dict>
<key>EmailAccountDescription</key>{site}
<key>EmailAccountName</key>{user}
<key>EmailAccountType</key><string>EmailTypeIMAP</string>
<key>EmailAddress</key>{address}
<key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
<key>IncomingMailServerHostName</key>{imap}
<key>IncomingMailServerPortNumber</key><integer>{imap_port}</integer>
<key>IncomingMailServerUseSSL</key>{imap_ssl}
<key>IncomingMailServerUsername</key>{user}
<key>IncomingPassword</key>{password}
<key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
<key>OutgoingMailServerHostName</key>{smtp}
<key>OutgoingMailServerPortNumber</key><integer>{smtp_port}</integer>
<key>OutgoingMailServerUseSSL</key>{smtp_ssl}
<key>OutgoingMailServerUsername</key>{user}
<key>OutgoingPasswordSameAsIncomingPassword</key><true/>
<key>PayloadDescription</key>{site}
<key>PayloadDisplayName</key>{address}
<key>PayloadIdentifier</key>{id_mail}
<key>PayloadType</key><string>com.apple.mail.managed</string>
<key>PayloadUUID</key>{uuid1}
<key>PayloadVersion</key><integer>1</integer>
</dict>
</array>
<key>PayloadDisplayName</key>{site}
<key>PayloadIdentifier</key>{id}
<key>PayloadRemovalDisallowed</key><false/>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadUUID</key>{uuid2}
<key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
"#,
        site = s(mail.site),
        user = s(user),
        address = s(&address),
        imap = s(mail.imap_host),
        imap_port = mail.imap_port,
        imap_ssl = b(implicit_tls(mail.imap_port) || mail.imap_port == 143),
        smtp = s(mail.smtp_host),
        smtp_port = mail.smtp_port,
        smtp_ssl = b(implicit_tls(mail.smtp_port) || mail.smtp_port == 587),
        password = s(password),
        id_mail = s(&format!("{id}.mail")),
        id = s(&id),
        uuid1 = s(&uuid()),
        uuid2 = s(&uuid()),
    )
}

/// `example.org` -> `org.example`, for payload identifiers.
fn reverse(domain: &str) -> String {
    domain.rsplit('.').collect::<Vec<_>>().join(".")
}

/// A user name as an identifier part: letters, digits and dashes.
fn user_id(user: &str) -> String {
    user.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Thunderbird's autoconfig (clientConfig 1.1): the same servers, no secret.
pub fn autoconfig(mail: &Mail) -> String {
    let socket = |port| {
        if implicit_tls(port) {
            "SSL"
        } else {
            "STARTTLS"
        }
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="{domain}">
    <domain>{domain}</domain>
    <displayName>{site}</displayName>
    <displayShortName>{site}</displayShortName>
    <incomingServer type="imap">
      <hostname>{imap}</hostname>
      <port>{imap_port}</port>
      <socketType>{imap_socket}</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>{smtp}</hostname>
      <port>{smtp_port}</port>
      <socketType>{smtp_socket}</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>
"#,
        domain = xml(mail.domain),
        site = xml(mail.site),
        imap = xml(mail.imap_host),
        imap_port = mail.imap_port,
        imap_socket = socket(mail.imap_port),
        smtp = xml(mail.smtp_host),
        smtp_port = mail.smtp_port,
        smtp_socket = socket(mail.smtp_port),
    )
}

/// Standard base64 with padding (RFC 4648), for the profile's `data:` link.
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn xml_escapes_markup() {
        assert_eq!(
            xml("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
        assert_eq!(xml("a\u{1}b"), "ab");
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid());
    }
}
