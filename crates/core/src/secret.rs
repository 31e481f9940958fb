//! App passwords: generation, normalisation, hashing and verification.
//!
//! An app password is a split token: a short public *selector* that finds its one row,
//! followed by the secret part. Both come from the OS CSPRNG; the stored argon2id hash
//! covers the whole normalised password, so a row's hash is bound to its selector.

use std::fmt;

use apppass_argon2::Hasher;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Params, Version};
use zeroize::Zeroizing;

/// The characters an app password is made of: lowercase letters and digits, without the
/// ones people confuse on a phone screen (0/o, 1/l/i).
pub const ALPHABET: &[u8; 31] = b"23456789abcdefghjkmnpqrstuvwxyz";
/// Characters of the public selector (31^6: about 887 million values).
pub const SELECTOR_LEN: usize = 6;
/// Characters of the secret part: 22 x log2(31) = 109 bits.
pub const SECRET_LEN: usize = 22;
/// Characters of a whole password, without separators.
pub const PASSWORD_LEN: usize = SELECTOR_LEN + SECRET_LEN;
/// Characters per dash-separated group when shown to a person.
const GROUP_LEN: usize = 4;
/// Input longer than this is not an app password, whatever it holds: normalising a
/// megabyte must not cost more than a wrong password.
pub const MAX_INPUT_LEN: usize = 256;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// Errors of this layer. None of them carries secret material.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretError {
    /// The OS random source failed.
    Random,
    /// A stored hash is not an argon2id PHC string this module can check.
    BadHash,
    /// argon2id parameters out of range (from the config or a stored hash).
    BadParams(String),
    /// argon2 could not allocate its memory.
    Hashing,
    /// A stored hash asks for more memory, passes or lanes than the configured caps
    /// allow: it is refused unhashed.
    TooCostly(HashParams),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Random => f.write_str("the OS random number generator failed"),
            SecretError::BadHash => f.write_str("stored hash is not an argon2id PHC string"),
            SecretError::BadParams(why) => write!(f, "bad argon2id parameters: {why}"),
            SecretError::Hashing => f.write_str("argon2id failed (out of memory?)"),
            SecretError::TooCostly(p) => write!(
                f,
                "stored hash asks for m={} KiB, t={}, p={}, beyond argon2_max_memory, argon2_max_time or argon2_max_lanes: not computed",
                p.m_kib, p.t, p.p
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// argon2id cost parameters for new hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        HashParams {
            m_kib: 19456,
            t: 2,
            p: 1,
        }
    }
}

impl HashParams {
    fn to_argon2(self) -> Result<Params, SecretError> {
        Params::new(self.m_kib, self.t, self.p, Some(HASH_LEN))
            .map_err(|e| SecretError::BadParams(e.to_string()))
    }

    /// Checks the parameters without hashing anything.
    pub fn validate(self) -> Result<(), SecretError> {
        self.to_argon2().map(|_| ())
    }
}

/// Maps `hasher`'s memory for computations at `params` now, so that the first one does
/// not pay for it.
pub fn reserve(hasher: &mut Hasher, params: HashParams) -> Result<(), SecretError> {
    hasher
        .reserve(&params.to_argon2()?)
        .map_err(|_| SecretError::Hashing)
}

/// A freshly generated app password, as shown once to its owner. Wiped on drop.
pub struct NewPassword {
    chars: Zeroizing<[u8; PASSWORD_LEN]>,
}

impl NewPassword {
    /// Draws a new password from the OS CSPRNG.
    pub fn generate() -> Result<Self, SecretError> {
        let mut chars = Zeroizing::new([0u8; PASSWORD_LEN]);
        let mut filled = 0;
        let mut pool = Zeroizing::new([0u8; 64]);
        while filled < PASSWORD_LEN {
            getrandom::fill(&mut pool[..]).map_err(|_| SecretError::Random)?;
            // Rejection sampling: 248 = 8 x 31, so the accepted bytes are uniform mod 31.
            for &b in pool.iter().filter(|&&b| b < 248) {
                if filled == PASSWORD_LEN {
                    break;
                }
                chars[filled] = ALPHABET[usize::from(b % 31)];
                filled += 1;
            }
        }
        Ok(NewPassword { chars })
    }

    /// The public selector stored in the clear.
    pub fn selector(&self) -> &str {
        // The alphabet is ASCII.
        std::str::from_utf8(&self.chars[..SELECTOR_LEN]).unwrap_or_default()
    }

    /// The password the way a person reads and types it: `abcd-efgh-...`.
    pub fn display(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(PASSWORD_LEN + PASSWORD_LEN / 4));
        for (i, c) in self.chars.iter().enumerate() {
            if i > 0 && i % GROUP_LEN == 0 {
                out.push('-');
            }
            out.push(char::from(*c));
        }
        out
    }

    /// Hashes this password for storage.
    pub fn hash(&self, params: HashParams) -> Result<String, SecretError> {
        self.hash_in(&mut Hasher::new(), params)
    }

    /// Hashes this password for storage, in `hasher`'s memory.
    pub fn hash_in(&self, hasher: &mut Hasher, params: HashParams) -> Result<String, SecretError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| SecretError::Random)?;
        let mut out = Zeroizing::new([0u8; HASH_LEN]);
        hasher
            .compute(&params.to_argon2()?, &self.chars[..], &salt, &mut out[..])
            .map_err(|_| SecretError::Hashing)?;
        phc_string(&salt, &out[..], params)
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewPassword {{ selector: {:?}, .. }}", self.selector())
    }
}

/// A password as typed at login, normalised: separators and spaces dropped, lowercased.
/// Wiped on drop.
pub struct Candidate {
    chars: Zeroizing<[u8; PASSWORD_LEN]>,
}

impl Candidate {
    /// Normalises what a client sent. `None` when it cannot be an app password (wrong
    /// length or a character outside the alphabet); the caller must still spend one
    /// verification on it so that the answer takes the usual time.
    pub fn parse(input: &[u8]) -> Option<Candidate> {
        if input.len() > MAX_INPUT_LEN {
            return None;
        }
        let mut chars = Zeroizing::new([0u8; PASSWORD_LEN]);
        let mut n = 0;
        for &b in input {
            if b == b'-' || b.is_ascii_whitespace() {
                continue;
            }
            let c = b.to_ascii_lowercase();
            if n == PASSWORD_LEN || !ALPHABET.contains(&c) {
                return None;
            }
            chars[n] = c;
            n += 1;
        }
        (n == PASSWORD_LEN).then_some(Candidate { chars })
    }

    /// The public selector.
    pub fn selector(&self) -> &str {
        std::str::from_utf8(&self.chars[..SELECTOR_LEN]).unwrap_or_default()
    }

    /// The bytes that were hashed at creation.
    fn bytes(&self) -> &[u8] {
        &self.chars[..]
    }
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Candidate {{ selector: {:?}, .. }}", self.selector())
    }
}

fn phc_string(salt: &[u8], output: &[u8], params: HashParams) -> Result<String, SecretError> {
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params.to_argon2()?)
            .map_err(|e| SecretError::BadParams(e.to_string()))?,
        salt: Some(Salt::new(salt).map_err(|_| SecretError::BadHash)?),
        hash: Some(Output::new(output).map_err(|_| SecretError::BadHash)?),
    };
    Ok(phc.to_string())
}

/// A PHC string at the given parameters that no password matches (its output is not the
/// hash of anything anyone knows): verifying against it costs what verifying a real
/// password costs, and always fails. Building it costs nothing.
pub fn dummy_hash(params: HashParams) -> Result<String, SecretError> {
    phc_string(b"apppass-dummy-salt", &[0u8; HASH_LEN], params)
}

/// Checks `candidate` against a stored PHC string: one argon2id computation at the
/// parameters the string carries, then a constant-time comparison.
///
/// With `candidate` = `None` (input that is not an app password) the hash is still
/// computed, from a fixed input, so the answer takes the same time.
pub fn verify(candidate: Option<&Candidate>, phc: &str) -> Result<bool, SecretError> {
    verify_in(&mut Hasher::new(), candidate, phc, None)
}

/// [`verify`] in `hasher`'s memory; a hash whose parameters exceed `cap` is refused
/// before anything is computed or allocated.
pub fn verify_in(
    hasher: &mut Hasher,
    candidate: Option<&Candidate>,
    phc: &str,
    cap: Option<HashParams>,
) -> Result<bool, SecretError> {
    let parsed = PasswordHash::new(phc).map_err(|_| SecretError::BadHash)?;
    if parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed
            .version
            .is_some_and(|v| v != u32::from(Version::V0x13))
    {
        return Err(SecretError::BadHash);
    }
    let params = Params::try_from(&parsed).map_err(|_| SecretError::BadHash)?;
    let salt = parsed.salt.as_ref().ok_or(SecretError::BadHash)?;
    let expected = parsed.hash.as_ref().ok_or(SecretError::BadHash)?;
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let input: &[u8] = match candidate {
        Some(c) => c.bytes(),
        None => &[0u8; PASSWORD_LEN],
    };
    if let Some(cap) = cap {
        let asked = HashParams {
            m_kib: params.m_cost(),
            t: params.t_cost(),
            p: params.p_cost(),
        };
        if asked.m_kib > cap.m_kib || asked.t > cap.t || asked.p > cap.p {
            return Err(SecretError::TooCostly(asked));
        }
    }
    hasher
        .compute(&params, input, salt, &mut out)
        .map_err(|_| SecretError::Hashing)?;
    Ok(constant_time_eq(&out, expected.as_bytes()) && candidate.is_some())
}

/// Equality whose running time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Cheap parameters for the unit tests: they check logic, not
/// cost.
#[cfg(test)]
pub(crate) const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_use_the_alphabet_and_group_by_four() {
        let pw = NewPassword::generate().unwrap();
        let shown = pw.display();
        assert_eq!(shown.len(), PASSWORD_LEN + PASSWORD_LEN / GROUP_LEN - 1);
        for group in shown.split('-') {
            assert_eq!(group.len(), GROUP_LEN);
            assert!(group.bytes().all(|b| ALPHABET.contains(&b)), "{group}");
        }
        assert_eq!(pw.selector(), &shown.replace('-', "")[..SELECTOR_LEN]);
    }

    #[test]
    fn generation_is_not_constant() {
        let a = NewPassword::generate().unwrap();
        let b = NewPassword::generate().unwrap();
        assert_ne!(*a.display(), *b.display());
    }

    #[test]
    fn every_alphabet_character_appears() {
        let mut seen = [false; 256];
        for _ in 0..200 {
            for b in NewPassword::generate().unwrap().chars.iter() {
                seen[usize::from(*b)] = true;
            }
        }
        for &c in ALPHABET {
            assert!(seen[usize::from(c)], "{} never drawn", char::from(c));
        }
    }

    #[test]
    fn alphabet_has_no_confusable_characters() {
        for c in b"01ilo" {
            assert!(!ALPHABET.contains(c));
        }
        let mut sorted = ALPHABET.to_vec();
        sorted.dedup();
        assert_eq!(sorted.len(), 31);
    }

    #[test]
    fn normalisation_ignores_dashes_spaces_and_case() {
        let pw = NewPassword::generate().unwrap();
        let shown = pw.display().to_string();
        let forms = [
            shown.clone(),
            shown.replace('-', ""),
            shown.replace('-', " ").to_uppercase(),
            format!("  {}\t", shown.replace('-', "  -")),
        ];
        let hash = pw.hash(FAST).unwrap();
        for form in forms {
            let c = Candidate::parse(form.as_bytes()).expect(&form);
            assert_eq!(c.selector(), pw.selector());
            assert!(verify(Some(&c), &hash).unwrap(), "{form}");
        }
    }

    #[test]
    fn parse_refuses_what_cannot_be_an_app_password() {
        let pw = NewPassword::generate().unwrap();
        let shown = pw.display().to_string();
        assert!(Candidate::parse(b"").is_none());
        assert!(Candidate::parse(&shown.as_bytes()[..shown.len() - 1]).is_none());
        assert!(Candidate::parse(format!("{shown}a").as_bytes()).is_none());
        assert!(
            Candidate::parse(
                shown
                    .replacen(
                        |c: char| c.is_ascii_digit() || c.is_ascii_lowercase(),
                        "0",
                        1
                    )
                    .as_bytes()
            )
            .is_none()
        );
        let mut non_utf8 = shown.clone().into_bytes();
        non_utf8[0] = 0xff;
        assert!(Candidate::parse(&non_utf8).is_none());
        assert!(Candidate::parse(&vec![b'a'; 1 << 20]).is_none());
        assert!(Candidate::parse(&vec![b'-'; 1 << 20]).is_none());
    }

    #[test]
    fn wrong_password_does_not_verify() {
        let pw = NewPassword::generate().unwrap();
        let other = NewPassword::generate().unwrap();
        let hash = pw.hash(FAST).unwrap();
        let c = Candidate::parse(other.display().as_bytes()).unwrap();
        assert!(!verify(Some(&c), &hash).unwrap());
        assert!(!verify(None, &hash).unwrap());
    }

    #[test]
    fn hashes_are_standard_argon2id_phc_strings() {
        let pw = NewPassword::generate().unwrap();
        let hash = pw.hash(FAST).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        // Another implementation (the argon2 crate's own verifier) accepts it.
        use argon2::PasswordVerifier;
        argon2::Argon2::default()
            .verify_password(&pw.chars[..], hash.as_str())
            .unwrap();
        let two = pw.hash(FAST).unwrap();
        assert_ne!(hash, two, "salts must differ");
    }

    #[test]
    fn default_parameters_are_at_least_owasp() {
        let p = HashParams::default();
        assert!(p.m_kib >= 19456 && p.t >= 2 && p.p >= 1);
        let hash = dummy_hash(p).unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
    }

    #[test]
    fn dummy_never_verifies() {
        let pw = NewPassword::generate().unwrap();
        let c = Candidate::parse(pw.display().as_bytes()).unwrap();
        assert!(!verify(Some(&c), &dummy_hash(FAST).unwrap()).unwrap());
    }

    #[test]
    fn hashes_beyond_the_caps_are_not_computed() {
        let pw = NewPassword::generate().unwrap();
        let c = Candidate::parse(pw.display().as_bytes()).unwrap();
        // 4 TiB and 2^32 - 1 passes: computing either would take the process down.
        let huge = dummy_hash(HashParams {
            m_kib: u32::MAX,
            t: 1,
            p: 1,
        })
        .unwrap();
        let slow = dummy_hash(HashParams {
            m_kib: 64,
            t: u32::MAX,
            p: 1,
        })
        .unwrap();
        let cap = HashParams {
            m_kib: 19456,
            t: 4,
            p: 1,
        };
        for phc in [&huge, &slow] {
            let e = verify_in(&mut Hasher::new(), Some(&c), phc, Some(cap)).unwrap_err();
            assert!(matches!(e, SecretError::TooCostly(_)), "{e:?}");
        }
        let ok = pw.hash(FAST).unwrap();
        assert!(verify_in(&mut Hasher::new(), Some(&c), &ok, Some(cap)).unwrap());
    }

    #[test]
    fn foreign_hashes_are_refused() {
        assert_eq!(verify(None, "plain"), Err(SecretError::BadHash));
        let argon2i =
            "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert_eq!(verify(None, argon2i), Err(SecretError::BadHash));
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let pw = NewPassword::generate().unwrap();
        let shown = pw.display().replace('-', "");
        let dbg = format!("{pw:?}");
        assert!(!dbg.contains(&shown[SELECTOR_LEN..]));
        let c = Candidate::parse(shown.as_bytes()).unwrap();
        assert!(!format!("{c:?}").contains(&shown[SELECTOR_LEN..]));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
