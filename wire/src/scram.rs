//! The server side of SCRAM-SHA-256 (RFC 5802/7677), as PostgreSQL does it:
//! Ferry authenticates its clients against `[[users]]` without ever keeping
//! their passwords in memory in a form the client could replay.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM exchange failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("invalid SCRAM verifier")]
    BadVerifier,
    #[error("password authentication failed")]
    WrongPassword,
    #[error(
        "the server's SCRAM secret for this role differs from Ferry's (salt or iteration count): \
         pass-through needs the same verifier on Ferry and on every node"
    )]
    SecretMismatch,
    #[error("the server's SCRAM signature is wrong")]
    ServerSignature,
}

/// What a client's SCRAM proof reveals to the server that checked it: its
/// ClientKey, with which Ferry can log in to a server holding the same
/// verifier on the client's behalf (pgbouncer's pass-through), without
/// ever knowing the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKeys {
    client_key: Vec<u8>,
    server_key: Vec<u8>,
    salt: Vec<u8>,
    iterations: u32,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeys(..)")
    }
}

/// A stored SCRAM secret: what PostgreSQL keeps in `pg_authid.rolpassword`.
#[derive(Clone, Debug)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Verifier {
    /// Derives a verifier from a plaintext password (random salt, 4096 rounds).
    pub fn from_password(password: &str) -> Self {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The crate's own output always parses.
        Self::parse(&text).unwrap_or(Self {
            iterations: 0,
            salt: Vec::new(),
            stored_key: Vec::new(),
            server_key: Vec::new(),
        })
    }

    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Self, ScramError> {
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(ScramError::BadVerifier)?;
        let (iter_salt, keys) = rest.split_once('$').ok_or(ScramError::BadVerifier)?;
        let (iter, salt) = iter_salt.split_once(':').ok_or(ScramError::BadVerifier)?;
        let (stored, server) = keys.split_once(':').ok_or(ScramError::BadVerifier)?;
        let dec = |s: &str| B64.decode(s).map_err(|_| ScramError::BadVerifier);
        let v = Self {
            iterations: iter.parse().map_err(|_| ScramError::BadVerifier)?,
            salt: dec(salt)?,
            stored_key: dec(stored)?,
            server_key: dec(server)?,
        };
        if v.iterations == 0 || v.stored_key.len() != 32 || v.server_key.len() != 32 {
            return Err(ScramError::BadVerifier);
        }
        Ok(v)
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The exchange after the client-first message.
pub struct ScramServer {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
}

impl ScramServer {
    /// Handles SASLInitialResponse data; returns the state and the
    /// server-first message to send in AuthenticationSASLContinue.
    pub fn start(verifier: Verifier, client_first: &[u8]) -> Result<(Self, String), ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (cb, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        match cb {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("gs2 flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        let gs2_header = format!("{cb},{authzid},");
        // PostgreSQL ignores the user name in the SCRAM message (it was in
        // the startup packet) but requires the nonce.
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("client nonce"))?;
        let raw: [u8; 18] = rand::random();
        let nonce = format!("{client_nonce}{}", B64.encode(raw));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            Self {
                verifier,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                gs2_header,
                nonce,
            },
            server_first,
        ))
    }

    /// Handles the client-final message; on success returns the server-final
    /// message for AuthenticationSASLFinal and the client's keys.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, ClientKeys), ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let channel = channel.ok_or(ScramError::Malformed("channel binding"))?;
        if B64.decode(channel).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof"))?;
        if proof.len() != 32 {
            return Err(ScramError::WrongPassword);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let check = Sha256::digest(&client_key);
        // Constant-time comparison: fold every byte difference.
        let diff = check
            .iter()
            .zip(&self.verifier.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        let keys = ClientKeys {
            client_key,
            server_key: self.verifier.server_key,
            salt: self.verifier.salt,
            iterations: self.verifier.iterations,
        };
        Ok((format!("v={}", B64.encode(server_signature)), keys))
    }
}

/// The client side of SCRAM-SHA-256 with a client's keys instead of a
/// password: the server must hold the verifier the keys came from.
pub struct KeysClient {
    keys: ClientKeys,
    client_first_bare: String,
    nonce: String,
    /// The AuthMessage, once the server's first message arrived.
    auth_message: Option<String>,
}

impl KeysClient {
    /// The client and its client-first message (for SASLInitialResponse).
    pub fn new(keys: ClientKeys) -> (Self, String) {
        let raw: [u8; 18] = rand::random();
        let nonce = B64.encode(raw);
        let client_first_bare = format!("n=,r={nonce}");
        let first = format!("n,,{client_first_bare}");
        (
            Self {
                keys,
                client_first_bare,
                nonce,
                auth_message: None,
            },
            first,
        )
    }

    /// Takes the server-first message; returns the client-final one.
    pub fn update(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("utf-8"))?;
        let attr = |name: &str| {
            text.split(',')
                .find_map(|a| a.strip_prefix(name))
                .ok_or(ScramError::Malformed("server-first"))
        };
        let nonce = attr("r=")?;
        if !nonce.starts_with(&self.nonce) {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let salt = B64
            .decode(attr("s=")?)
            .map_err(|_| ScramError::Malformed("salt"))?;
        let iterations: u32 = attr("i=")?
            .parse()
            .map_err(|_| ScramError::Malformed("iterations"))?;
        if salt != self.keys.salt || iterations != self.keys.iterations {
            return Err(ScramError::SecretMismatch);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let stored_key = Sha256::digest(&self.keys.client_key);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = self
            .keys
            .client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.auth_message = Some(auth_message);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server knew the verifier too.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let auth_message = self
            .auth_message
            .as_ref()
            .ok_or(ScramError::Malformed("final before first"))?;
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("utf-8"))?;
        let given = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("server-final"))?;
        let expected = hmac(&self.keys.server_key, auth_message.as_bytes());
        let diff = given.len() ^ expected.len()
            | given
                .iter()
                .zip(&expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b)) as usize;
        if diff != 0 {
            return Err(ScramError::ServerSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn exchange(stored: &str, typed: &str) -> Result<(), ScramError> {
        let verifier = Verifier::from_password(stored);
        let mut client = ScramSha256::new(typed.as_bytes(), ChannelBinding::unsupported());
        let (server, first) = ScramServer::start(verifier, client.message())?;
        client
            .update(first.as_bytes())
            .map_err(|_| ScramError::Malformed("client"))?;
        let (fin, _) = server.finish(client.message())?;
        client
            .finish(fin.as_bytes())
            .map_err(|_| ScramError::Malformed("server signature"))
    }

    #[test]
    fn a_clients_keys_log_in_to_a_server_holding_the_same_verifier() {
        let verifier = Verifier::from_password("secret");
        // A client proves itself to Ferry with its password ...
        let mut client = ScramSha256::new(b"secret", ChannelBinding::unsupported());
        let (ferry, first) = ScramServer::start(verifier.clone(), client.message()).unwrap();
        client.update(first.as_bytes()).unwrap();
        let (_, keys) = ferry.finish(client.message()).unwrap();
        // ... and Ferry logs in with its keys to a server with that verifier.
        let (mut onward, first) = KeysClient::new(keys.clone());
        let (server, server_first) = ScramServer::start(verifier, first.as_bytes()).unwrap();
        let client_final = onward.update(server_first.as_bytes()).unwrap();
        let (server_final, _) = server.finish(client_final.as_bytes()).unwrap();
        assert_eq!(onward.finish(server_final.as_bytes()), Ok(()));
        // A server with another verifier for the same password is told apart.
        let (mut onward, first) = KeysClient::new(keys);
        let other = Verifier::from_password("secret");
        let (_, server_first) = ScramServer::start(other, first.as_bytes()).unwrap();
        assert_eq!(
            onward.update(server_first.as_bytes()),
            Err(ScramError::SecretMismatch)
        );
    }

    #[test]
    fn right_password_authenticates_both_ways() {
        assert_eq!(exchange("secret", "secret"), Ok(()));
    }

    #[test]
    fn wrong_password_is_refused() {
        assert_eq!(exchange("secret", "guess"), Err(ScramError::WrongPassword));
    }

    #[test]
    fn garbage_is_an_error() {
        let v = Verifier::from_password("x");
        assert!(ScramServer::start(v.clone(), b"\xff\xfe").is_err());
        assert!(ScramServer::start(v.clone(), b"n,,n=,").is_err());
        assert_eq!(
            ScramServer::start(v, b"p=tls-server-end-point,,n=,r=abc").err(),
            Some(ScramError::ChannelBinding)
        );
        assert!(Verifier::parse("SCRAM-SHA-256$x").is_err());
    }
}
