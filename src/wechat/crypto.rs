//! WeChat message-push cryptography: the SHA-1 signatures that authenticate a push (and the
//! URL check), and the "safe mode" AES envelope that hides the pushed message.
//!
//! Safe mode, as WeChat documents it:
//! - key = base64-decode(EncodingAESKey + "="), 32 bytes; IV = the key's first 16 bytes;
//! - AES-256-CBC with PKCS#7 padding to a **32**-byte block (pad value 1..=32);
//! - plaintext = 16 random bytes ‖ 4-byte big-endian length L ‖ L bytes of message ‖ appid.
//!
//! Callers must check `msg_signature` (see [`verify_signature`]) before calling
//! [`MessageCrypto::decrypt`]: the distinct decryption errors would otherwise act as a
//! padding oracle for whoever can reach the endpoint.

use std::fmt;

use aes::Aes256;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine as _;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::RngCore;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;

/// WeChat pads to 32-byte blocks, not AES's 16.
const PAD_BLOCK: usize = 32;
/// AES block size: the ciphertext must be a whole number of these.
const AES_BLOCK: usize = 16;
const RANDOM_LEN: usize = 16;
const LEN_FIELD: usize = 4;
const HEADER_LEN: usize = RANDOM_LEN + LEN_FIELD;
/// Length of an EncodingAESKey as the WeChat console hands it out.
const ENCODING_AES_KEY_LEN: usize = 43;

/// EncodingAESKey decoder. WeChat's own SDKs decode leniently, and a 43-character key's last
/// character carries 4 bits that do not make it into the 32 bytes; a strict decoder would
/// reject most real keys (e.g. one ending in `G`), so those bits are ignored here.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Errors from building a [`MessageCrypto`] or decrypting a safe-mode message.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("EncodingAESKey must be exactly {ENCODING_AES_KEY_LEN} characters, got {0}")]
    KeyLength(usize),
    #[error("EncodingAESKey is not valid base64: {0}")]
    KeyBase64(#[source] base64::DecodeError),
    #[error("EncodingAESKey must decode to 32 bytes, got {0}")]
    KeyBytes(usize),
    #[error("appid must not be empty")]
    EmptyAppId,
    #[error("Encrypt is not valid base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("ciphertext length {0} is not a non-zero multiple of {AES_BLOCK} bytes")]
    CiphertextLength(usize),
    #[error("decrypted data has invalid padding")]
    Padding,
    #[error("decrypted data is too short ({0} bytes) for the random prefix and length field")]
    TooShort(usize),
    #[error("message length field says {declared} bytes but only {available} follow it")]
    LengthField { declared: u32, available: usize },
    #[error("appid inside the encrypted message does not match ours")]
    AppIdMismatch,
    #[error("decrypted message is not valid UTF-8")]
    Utf8,
}

/// Hex SHA-1 of the parts sorted lexicographically (byte order) and concatenated with
/// nothing between: WeChat's `signature` (`[token, timestamp, nonce]`) and `msg_signature`
/// (`[token, timestamp, nonce, encrypt]`).
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Whether `given_hex` (lowercase hex, as WeChat sends it) is the [`signature`] of `parts`.
/// The comparison is constant-time so the endpoint does not leak how much of a forged
/// signature was right.
pub fn verify_signature(given_hex: &str, parts: &[&str]) -> bool {
    let expected = signature(parts);
    // Length is not secret (always 40); ct_eq returns false on a length mismatch.
    expected.as_bytes().ct_eq(given_hex.as_bytes()).into()
}

/// Safe-mode encryption and decryption for one mini-program (one EncodingAESKey + appid).
#[derive(Clone)]
pub struct MessageCrypto {
    key: [u8; 32],
    appid: String,
}

// Hand-written so the key never ends up in logs.
impl fmt::Debug for MessageCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCrypto")
            .field("key", &"<redacted>")
            .field("appid", &self.appid)
            .finish()
    }
}

impl MessageCrypto {
    /// Builds the cipher from the console's 43-character EncodingAESKey and the app's appid.
    /// The key is taken as given: no trimming.
    pub fn new(encoding_aes_key: &str, appid: &str) -> Result<Self, CryptoError> {
        if encoding_aes_key.len() != ENCODING_AES_KEY_LEN {
            return Err(CryptoError::KeyLength(encoding_aes_key.chars().count()));
        }
        if appid.is_empty() {
            return Err(CryptoError::EmptyAppId);
        }
        let padded = format!("{encoding_aes_key}=");
        let bytes = KEY_ENGINE
            .decode(padded.as_bytes())
            .map_err(CryptoError::KeyBase64)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::KeyBytes(bytes.len()))?;
        Ok(Self {
            key,
            appid: appid.to_owned(),
        })
    }

    /// The appid this cipher expects inside every message.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }

    /// Decrypts a safe-mode `Encrypt` value to the pushed message (JSON or XML text).
    /// Fails, without panicking, on anything malformed, and with
    /// [`CryptoError::AppIdMismatch`] when the message was meant for another app.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<String, CryptoError> {
        let ciphertext = STANDARD
            .decode(encrypt_b64.as_bytes())
            .map_err(CryptoError::Base64)?;
        if ciphertext.is_empty() || ciphertext.len() % AES_BLOCK != 0 {
            return Err(CryptoError::CiphertextLength(ciphertext.len()));
        }
        let plain = Aes256CbcDec::new(&self.key.into(), &self.iv().into())
            .decrypt_padded_vec_mut::<NoPadding>(&ciphertext)
            .map_err(|_| CryptoError::CiphertextLength(ciphertext.len()))?;
        let unpadded = strip_padding(&plain)?;

        if unpadded.len() < HEADER_LEN {
            return Err(CryptoError::TooShort(unpadded.len()));
        }
        let (header, rest) = unpadded.split_at(HEADER_LEN);
        let mut len_bytes = [0u8; LEN_FIELD];
        len_bytes.copy_from_slice(&header[RANDOM_LEN..]);
        let declared = u32::from_be_bytes(len_bytes);
        let msg_len = usize::try_from(declared)
            .ok()
            .filter(|&n| n <= rest.len())
            .ok_or(CryptoError::LengthField {
                declared,
                available: rest.len(),
            })?;
        let (msg, appid) = rest.split_at(msg_len);
        if appid != self.appid.as_bytes() {
            return Err(CryptoError::AppIdMismatch);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::Utf8)
    }

    /// Encrypts `msg` for a reply or a test, with 16 fresh random bytes in front.
    ///
    /// # Panics
    /// If `msg` is 4 GiB or longer (the length field is 32 bits).
    pub fn encrypt(&self, msg: &str) -> String {
        let mut random = [0u8; RANDOM_LEN];
        rand::thread_rng().fill_bytes(&mut random);
        self.encrypt_with_random(msg, random)
    }

    /// Like [`encrypt`](Self::encrypt) with the 16 "random" bytes given, so the output is
    /// reproducible (known-answer tests).
    ///
    /// # Panics
    /// If `msg` is 4 GiB or longer (the length field is 32 bits).
    pub fn encrypt_with_random(&self, msg: &str, random: [u8; 16]) -> String {
        let len = u32::try_from(msg.len()).expect("WeChat message must be shorter than 4 GiB");
        let body_len = HEADER_LEN + msg.len() + self.appid.len();
        let pad = PAD_BLOCK - body_len % PAD_BLOCK;
        let mut plain = Vec::with_capacity(body_len + pad);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(msg.as_bytes());
        plain.extend_from_slice(self.appid.as_bytes());
        // pad is in 1..=32, so it fits a byte.
        plain.resize(body_len + pad, pad as u8);
        let ciphertext = Aes256CbcEnc::new(&self.key.into(), &self.iv().into())
            .encrypt_padded_vec_mut::<NoPadding>(&plain);
        STANDARD.encode(ciphertext)
    }
}

/// Removes WeChat's PKCS#7 padding (block 32): the last byte n must be in 1..=32 and the
/// last n bytes must all equal n.
fn strip_padding(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let &last = plain.last().ok_or(CryptoError::Padding)?;
    let pad = usize::from(last);
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(CryptoError::Padding);
    }
    let (body, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| b != last) {
        return Err(CryptoError::Padding);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Official mini-program safe-mode vector (JSON), from WeChat's message-push page.
    const OFFICIAL_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const JSON_APPID: &str = "wxba5fad812f8e6fb9";
    const JSON_ENCRYPT: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
    const JSON_PLAIN: &str = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;

    // Official third-party-platform safe-mode vector (XML).
    const XML_APPID: &str = "wx134c8103faa5a59e";
    const XML_ENCRYPT: &str = "D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg==";
    const XML_PLAIN: &str = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n\
<FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>\n\
<CreateTime>1715943329</CreateTime>\n\
<MsgType><![CDATA[event]]></MsgType>\n\
<Event><![CDATA[debug_demo]]></Event>\n\
<debug_str><![CDATA[hello world]]></debug_str>\n\
</xml>";

    // Subscribe-event vector (`docs/wechat.md`), computed independently with Python.
    const SUB_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const SUB_APPID: &str = "wxb11529c136998cb6";
    const SUB_RANDOM: [u8; 16] = *b"aaaabbbbccccdddd";
    const SUB_PLAIN: &str = r#"{"ToUserName":"gh_7f083739789a","FromUserName":"oia2TjjewbmiOUlr6X-1crbLOvLw","CreateTime":1409304348,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBgHQQP7vs","SubscribeStatusString":"accept","PopupScene":"0"}]}"#;
    const SUB_ENCRYPT: &str = "jn1L23DB+6ELqJ+6bruv20wwA6zKDxnLqvqNVy9PfTIWWzpuDMvfkTCircw1URzVOqmEp7lYaMRL027JMOMcgaLjC26mHwl38l1+03MGAHbrKgXIEAm1qfzFH6+MU3avb+2YP08uPfdDLD6atii2HdhfR5xC6HLgRHyJagfLGBQLkHEQul8/OXaiuxK+bkTXnEVtGfnfm/CNxSe/GUq6BoDf2Z3/SBkLF8twq8oS2iC6d/ST8vO1MCJHWcZNtPbH8bgtiN0R6UuWkybLz9d+GZUF60X14M2DdFnK+6PYHzZzUxjtoXofuUTWsAnJJAAj+4kuZqtFIHhMPBCzpTHPf7tjgXNN5uyi35JS2LUVF8YNsbNq3xFoMEDYD2+kS8bHAocXa6G6YT5JaI4LnzGNa8nxjyuo7CWNU+2SMvOkDKw=";

    fn sub_crypto() -> MessageCrypto {
        MessageCrypto::new(SUB_KEY, SUB_APPID).expect("valid key")
    }

    /// Encrypts raw plaintext bytes (already padded by the caller) with the subscribe key,
    /// to build deliberately malformed envelopes.
    fn raw_encrypt(plain: &[u8]) -> String {
        let c = sub_crypto();
        let ct = Aes256CbcEnc::new(&c.key.into(), &c.iv().into())
            .encrypt_padded_vec_mut::<NoPadding>(plain);
        STANDARD.encode(ct)
    }

    /// 16 random ‖ length ‖ msg ‖ appid, padded WeChat-style.
    fn envelope(declared_len: u32, msg: &[u8], appid: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&SUB_RANDOM);
        p.extend_from_slice(&declared_len.to_be_bytes());
        p.extend_from_slice(msg);
        p.extend_from_slice(appid);
        let pad = 32 - p.len() % 32;
        p.resize(p.len() + pad, pad as u8);
        p
    }

    #[test]
    fn signature_known_answer_token() {
        assert_eq!(
            signature(&["token", "1409304348", "xxxxxx"]),
            "f43b4a6571a6552356f482636e5a77e7fa33dcc9"
        );
    }

    #[test]
    fn signature_known_answer_official_url_check() {
        assert_eq!(
            signature(&["AAAAA", "1714036504", "1514711492"]),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
    }

    #[test]
    fn signature_is_order_independent() {
        assert_eq!(
            signature(&["xxxxxx", "token", "1409304348"]),
            "f43b4a6571a6552356f482636e5a77e7fa33dcc9"
        );
    }

    #[test]
    fn official_query_signatures_verify() {
        // JSON page: signature and msg_signature.
        assert!(verify_signature(
            "6c5c811b55cc85e0e1b54100749188c20beb3f5d",
            &["AAAAA", "1714112445", "415670741"]
        ));
        assert!(verify_signature(
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
            &["AAAAA", "1714112445", "415670741", JSON_ENCRYPT]
        ));
        // XML page.
        assert!(verify_signature(
            "cc0c594499c1634947d5b502f158ee518947db27",
            &["AAAAA", "1715943329", "1590219412"]
        ));
        assert!(verify_signature(
            "6c12a4205838198b8fa631b3220723bb07f1015c",
            &["AAAAA", "1715943329", "1590219412", XML_ENCRYPT]
        ));
    }

    #[test]
    fn verify_signature_accepts_and_rejects() {
        let parts = ["token", "1409304348", "xxxxxx"];
        assert!(verify_signature(
            "f43b4a6571a6552356f482636e5a77e7fa33dcc9",
            &parts
        ));
        assert!(!verify_signature(
            "f43b4a6571a6552356f482636e5a77e7fa33dcc8",
            &parts
        ));
        assert!(!verify_signature("f43b4a65", &parts));
        assert!(!verify_signature("", &parts));
        assert!(!verify_signature(
            "f43b4a6571a6552356f482636e5a77e7fa33dcc9",
            &["token", "1409304349", "xxxxxx"]
        ));
    }

    #[test]
    fn subscribe_msg_signature_verifies() {
        assert!(verify_signature(
            "97df77d4e50a4afaa634b2e8d8ca04a80c908a2b",
            &["pamtest", "1409304348", "xxxxxx", SUB_ENCRYPT]
        ));
        assert_eq!(
            signature(&["pamtest", "1409304348", "xxxxxx", SUB_ENCRYPT]),
            "97df77d4e50a4afaa634b2e8d8ca04a80c908a2b"
        );
    }

    #[test]
    fn decrypts_official_json_vector() {
        let c = MessageCrypto::new(OFFICIAL_KEY, JSON_APPID).unwrap();
        assert_eq!(c.decrypt(JSON_ENCRYPT).unwrap(), JSON_PLAIN);
    }

    #[test]
    fn decrypts_official_xml_vector_byte_for_byte() {
        let c = MessageCrypto::new(OFFICIAL_KEY, XML_APPID).unwrap();
        assert_eq!(c.decrypt(XML_ENCRYPT).unwrap(), XML_PLAIN);
    }

    #[test]
    fn decrypts_subscribe_vector() {
        assert_eq!(sub_crypto().decrypt(SUB_ENCRYPT).unwrap(), SUB_PLAIN);
    }

    #[test]
    fn encrypt_with_random_reproduces_subscribe_vector() {
        assert_eq!(
            sub_crypto().encrypt_with_random(SUB_PLAIN, SUB_RANDOM),
            SUB_ENCRYPT
        );
    }

    #[test]
    fn full_32_byte_padding_block_round_trips() {
        // 20 header + 26 msg + 18 appid = 64: a whole extra block of 32 × 0x20 is added.
        let c = sub_crypto();
        let msg = "abcdefghijklmnopqrstuvwxyz";
        let enc = c.encrypt_with_random(msg, SUB_RANDOM);
        assert_eq!(STANDARD.decode(&enc).unwrap().len(), 96);
        assert_eq!(c.decrypt(&enc).unwrap(), msg);
    }

    #[test]
    fn empty_message_round_trips() {
        let c = sub_crypto();
        assert_eq!(c.decrypt(&c.encrypt("")).unwrap(), "");
    }

    #[test]
    fn encrypt_uses_fresh_randomness() {
        let c = sub_crypto();
        assert_ne!(c.encrypt("same"), c.encrypt("same"));
    }

    #[test]
    fn wrong_appid_inside_ciphertext_is_rejected() {
        let other = MessageCrypto::new(SUB_KEY, "wx0000000000000000").unwrap();
        let enc = other.encrypt("hello");
        assert!(matches!(
            sub_crypto().decrypt(&enc),
            Err(CryptoError::AppIdMismatch)
        ));
        // The official vector is for another appid too.
        let c = MessageCrypto::new(OFFICIAL_KEY, XML_APPID).unwrap();
        assert!(matches!(
            c.decrypt(JSON_ENCRYPT),
            Err(CryptoError::AppIdMismatch)
        ));
    }

    #[test]
    fn appid_prefix_or_extension_is_rejected() {
        let short = MessageCrypto::new(SUB_KEY, "wxb11529c136998cb").unwrap();
        let long = MessageCrypto::new(SUB_KEY, "wxb11529c136998cb6x").unwrap();
        assert!(matches!(
            short.decrypt(SUB_ENCRYPT),
            Err(CryptoError::AppIdMismatch)
        ));
        assert!(matches!(
            long.decrypt(SUB_ENCRYPT),
            Err(CryptoError::AppIdMismatch)
        ));
    }

    #[test]
    fn bad_base64_is_rejected() {
        let c = sub_crypto();
        assert!(matches!(
            c.decrypt("not base64!!"),
            Err(CryptoError::Base64(_))
        ));
        assert!(matches!(c.decrypt("QUJD="), Err(CryptoError::Base64(_))));
    }

    #[test]
    fn wrong_ciphertext_length_is_rejected() {
        let c = sub_crypto();
        assert!(matches!(
            c.decrypt(""),
            Err(CryptoError::CiphertextLength(0))
        ));
        // 15 bytes.
        let enc = STANDARD.encode([0u8; 15]);
        assert!(matches!(
            c.decrypt(&enc),
            Err(CryptoError::CiphertextLength(15))
        ));
    }

    #[test]
    fn truncated_ciphertext_is_rejected() {
        let c = sub_crypto();
        let full = STANDARD.decode(SUB_ENCRYPT).unwrap();
        // Cut to a non-block length, and to a whole number of blocks (then the padding or
        // the length field is wrong).
        for cut in [full.len() - 1, full.len() - 16, full.len() - 32, 16] {
            let enc = STANDARD.encode(&full[..cut]);
            assert!(c.decrypt(&enc).is_err(), "cut at {cut} decrypted");
        }
    }

    #[test]
    fn bad_padding_is_rejected() {
        let c = sub_crypto();
        let good = envelope(5, b"hello", SUB_APPID.as_bytes());
        assert_eq!(c.decrypt(&raw_encrypt(&good)).unwrap(), "hello");

        // Pad value 0.
        let mut zero = good.clone();
        *zero.last_mut().unwrap() = 0;
        assert!(matches!(
            c.decrypt(&raw_encrypt(&zero)),
            Err(CryptoError::Padding)
        ));
        // Pad value 33 (> 32).
        let mut big = good.clone();
        *big.last_mut().unwrap() = 33;
        assert!(matches!(
            c.decrypt(&raw_encrypt(&big)),
            Err(CryptoError::Padding)
        ));
        // Inconsistent pad bytes.
        let mut mixed = good.clone();
        let n = mixed.len();
        let pad = mixed[n - 1];
        assert!(pad >= 2);
        mixed[n - 2] = pad.wrapping_add(1);
        assert!(matches!(
            c.decrypt(&raw_encrypt(&mixed)),
            Err(CryptoError::Padding)
        ));
    }

    #[test]
    fn length_field_past_the_end_is_rejected() {
        let c = sub_crypto();
        let plain = envelope(1000, b"hello", SUB_APPID.as_bytes());
        assert!(matches!(
            c.decrypt(&raw_encrypt(&plain)),
            Err(CryptoError::LengthField { declared: 1000, .. })
        ));
        let plain = envelope(u32::MAX, b"hello", SUB_APPID.as_bytes());
        assert!(matches!(
            c.decrypt(&raw_encrypt(&plain)),
            Err(CryptoError::LengthField { .. })
        ));
    }

    #[test]
    fn too_short_plaintext_is_rejected() {
        let c = sub_crypto();
        // 10 bytes of data then 22 bytes of padding: less than the 20-byte header.
        let mut plain = vec![b'x'; 10];
        plain.resize(32, 22);
        assert!(matches!(
            c.decrypt(&raw_encrypt(&plain)),
            Err(CryptoError::TooShort(10))
        ));
    }

    #[test]
    fn non_utf8_message_is_rejected() {
        let c = sub_crypto();
        let plain = envelope(2, &[0xff, 0xfe], SUB_APPID.as_bytes());
        assert!(matches!(
            c.decrypt(&raw_encrypt(&plain)),
            Err(CryptoError::Utf8)
        ));
    }

    #[test]
    fn key_validation() {
        assert!(matches!(
            MessageCrypto::new("short", "wx1"),
            Err(CryptoError::KeyLength(5))
        ));
        assert!(matches!(
            MessageCrypto::new(&"A".repeat(44), "wx1"),
            Err(CryptoError::KeyLength(44))
        ));
        let bad = format!("{}!", "A".repeat(42));
        assert!(matches!(
            MessageCrypto::new(&bad, "wx1"),
            Err(CryptoError::KeyBase64(_))
        ));
        assert!(matches!(
            MessageCrypto::new(OFFICIAL_KEY, ""),
            Err(CryptoError::EmptyAppId)
        ));
        // 43 bytes but multi-byte characters: not base64.
        let wide = format!("{}é", "A".repeat(41));
        assert_eq!(wide.len(), 43);
        assert!(MessageCrypto::new(&wide, "wx1").is_err());
    }

    #[test]
    fn official_key_is_zero_bytes_and_debug_hides_it() {
        let c = MessageCrypto::new(OFFICIAL_KEY, JSON_APPID).unwrap();
        assert_eq!(c.key, [0u8; 32]);
        assert_eq!(c.iv(), [0u8; 16]);
        assert_eq!(c.appid(), JSON_APPID);
        let dbg = format!("{c:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains("[0, 0"));
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            CryptoError::AppIdMismatch.to_string(),
            "appid inside the encrypted message does not match ours"
        );
        assert!(CryptoError::KeyLength(5).to_string().contains("43"));
    }

    proptest! {
        #[test]
        fn decrypt_never_panics(s in ".*") {
            let _ = sub_crypto().decrypt(&s);
        }

        #[test]
        fn decrypt_never_panics_on_valid_base64(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = sub_crypto().decrypt(&STANDARD.encode(bytes));
        }

        #[test]
        fn decrypt_never_panics_on_random_block_ciphertext(blocks in 1usize..8, seed in any::<[u8; 16]>()) {
            let ct: Vec<u8> = (0..blocks * 16).map(|i| seed[i % 16].wrapping_add(i as u8)).collect();
            let _ = sub_crypto().decrypt(&STANDARD.encode(ct));
        }

        #[test]
        fn round_trip(msg in ".*", random in any::<[u8; 16]>()) {
            let c = sub_crypto();
            prop_assert_eq!(c.decrypt(&c.encrypt_with_random(&msg, random)).unwrap(), msg.clone());
            prop_assert_eq!(c.decrypt(&c.encrypt(&msg)).unwrap(), msg);
        }

        #[test]
        fn signature_is_lowercase_hex_of_40(parts in proptest::collection::vec(".*", 0..5)) {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let sig = signature(&refs);
            prop_assert_eq!(sig.len(), 40);
            prop_assert!(sig.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert!(verify_signature(&sig, &refs));
        }
    }
}
