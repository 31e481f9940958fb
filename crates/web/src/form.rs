//! HTML form bodies (`application/x-www-form-urlencoded`), read strictly: a body that is
//! not one, or whose values are not UTF-8, is refused as a whole. Values are wiped when
//! dropped, since some are passwords.

use zeroize::Zeroizing;

/// Most fields a form of ours has (the conversation's answers included).
const MAX_FIELDS: usize = 32;

/// The fields of one form, in order.
pub struct Form(Vec<(String, Zeroizing<String>)>);

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be passwords.
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Form {
    /// Reads `body`; `None` if it is not a well-formed form.
    pub fn parse(body: &[u8]) -> Option<Form> {
        let mut fields = Vec::new();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            if fields.len() == MAX_FIELDS {
                return None;
            }
            let mut kv = pair.splitn(2, |b| *b == b'=');
            let key = decode(kv.next()?)?;
            let value = decode(kv.next().unwrap_or(b""))?;
            fields.push((key.to_string(), value));
        }
        Some(Form(fields))
    }

    /// The first value of `name` (`""` when absent).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Takes the value of `name` out of the form (wiped when the caller drops it).
    pub fn take(&mut self, name: &str) -> Zeroizing<String> {
        match self.0.iter().position(|(k, _)| k == name) {
            Some(i) => self.0.remove(i).1,
            None => Zeroizing::new(String::new()),
        }
    }
}

/// Percent-decoding with `+` as a space; `None` for a bad escape or bytes that are not
/// UTF-8.
fn decode(raw: &[u8]) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len()));
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    let text = std::str::from_utf8(&out).ok()?;
    Some(Zeroizing::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_strictly() {
        let mut f = Form::parse(b"user=al%C3%A9+x&password=p%26w&empty=&flag").unwrap();
        assert_eq!(f.get("user"), "al\u{e9} x");
        assert_eq!(f.get("flag"), "");
        assert_eq!(f.take("password").as_str(), "p&w");
        assert_eq!(f.get("password"), "");
        assert!(!format!("{f:?}").contains("p&w"));
        for bad in [&b"a=%zz"[..], b"a=%4", b"a=%ff", b"a=\xff"] {
            assert!(Form::parse(bad).is_none(), "{bad:?}");
        }
        assert!(Form::parse("a=1&".repeat(40).as_bytes()).is_none());
    }
}
