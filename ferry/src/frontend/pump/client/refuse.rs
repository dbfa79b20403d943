//! A statement that would switch capture off (see
//! [`ferry_sql::forbidden`]) is replaced, before anything else looks at
//! it, by one the server answers with SQLSTATE 42501: the error reaches the
//! client in its place among the session's answers, and nothing of the
//! statement runs. A Parse keeps its name and parameter types, so the Bind
//! and Execute that follow fail as the client expects them to.

use bytes::{BufMut, BytesMut};
use ferry_sql::forbidden::{forbidden_setting, refusal};
use ferry_wire::codec::read_cstr;
use ferry_wire::tag::frontend::{PARSE, QUERY};
use tracing::warn;

/// Replaces the Query or Parse of `len` bytes at `at` in `cbuf` when it is
/// refused; returns the length of the message now there.
pub(super) fn replace_forbidden(cbuf: &mut BytesMut, at: usize, tag: u8, len: usize) -> usize {
    let Some(body) = refused_body(tag, &cbuf[at + 5..at + len]) else {
        return len;
    };
    let mut out = BytesMut::with_capacity(cbuf.len() - len + body.len() + 5);
    out.extend_from_slice(&cbuf[..at]);
    out.put_u8(tag);
    // Ferry's own text: far below i32::MAX.
    out.put_i32(body.len() as i32 + 4);
    out.extend_from_slice(&body);
    out.extend_from_slice(&cbuf[at + len..]);
    let replaced = body.len() + 5;
    *cbuf = out;
    replaced
}

/// The body of the replacement message, or None when the statement may go.
fn refused_body(tag: u8, body: &[u8]) -> Option<Vec<u8>> {
    let (name, rest) = match tag {
        QUERY => (None, body),
        PARSE => {
            let (name, rest) = read_cstr(body)?;
            (Some(name), rest)
        }
        _ => return None,
    };
    let (sql, after) = read_cstr(rest)?;
    let what = forbidden_setting(sql)?;
    warn!(
        setting = what,
        "refused a client statement that would switch capture off"
    );
    let mut out = Vec::new();
    if let Some(name) = name {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(refusal(what).as_bytes());
    out.push(0);
    if name.is_some() {
        out.extend_from_slice(&parameter_types(sql, after));
    }
    Some(out)
}

/// The type OID of `text`.
const TEXT: u32 = 25;

/// The replacement's parameter types: the client's, and `text` for each
/// further `$n` its statement used, so that the Describe and Bind the
/// client sends next find as many parameters as it expects.
fn parameter_types(sql: &str, declared: &[u8]) -> Vec<u8> {
    let count = declared
        .get(..2)
        .map_or(0, |c| i16::from_be_bytes([c[0], c[1]]).max(0) as usize);
    let mut types: Vec<u32> = declared
        .get(2..)
        .unwrap_or_default()
        .chunks_exact(4)
        .take(count)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let used = sql
        .split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .max()
        .unwrap_or(0)
        .min(i16::MAX as usize);
    while types.len() < used {
        types.push(TEXT);
    }
    let mut out = (types.len() as i16).to_be_bytes().to_vec();
    for t in types {
        out.extend_from_slice(&t.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_parse_keeps_as_many_parameters_as_its_statement_used() {
        let types = parameter_types("SELECT set_config($1, $2, false)", &[0, 0]);
        assert_eq!(types, vec![0, 2, 0, 0, 0, 25, 0, 0, 0, 25]);
        let declared = [0, 1, 0, 0, 0, 23];
        let types = parameter_types("SELECT set_config('x', $1::text, false)", &declared);
        assert_eq!(types, vec![0, 1, 0, 0, 0, 23]);
        assert_eq!(parameter_types("SET x = 1", &[]), vec![0, 0]);
    }
}
