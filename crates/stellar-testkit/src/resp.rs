//! A tiny blocking RESP2 client: one connection per command, enough for fixtures to ask a node
//! `CLUSTER INFO` or `ROLE` without a Redis crate.

use std::{
    io::{self, BufRead, BufReader, ErrorKind, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

/// How long connecting to a loopback node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a fixture waits for one reply: every command it sends answers at once, or (`WAIT`)
/// within a timeout shorter than this.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A reply to a command, as RESP2 sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple string, e.g. `OK`.
    Status(String),
    /// An error reply, e.g. `MOVED 866 127.0.0.1:7001`: Redis answered, and said no.
    Error(String),
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// The null bulk string or null array.
    Nil,
    /// An array of replies.
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a status or bulk reply (bulk bytes decoded lossily); `None` for the others.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Status(text) => Some(text.clone()),
            Self::Bulk(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Self::Integer(value) => Some(*value),
            _ => None,
        }
    }

    /// The items of an array reply.
    pub fn array(&self) -> Option<&[Reply]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The value of a `name:value` line in a text reply (`INFO`, `CLUSTER INFO`).
    pub fn field(&self, name: &str) -> Option<String> {
        let text = self.text()?;
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == name).then(|| value.trim_end().to_owned())
        })
    }
}

/// Sends one command to the server on `127.0.0.1:port` and reads its reply.
pub(crate) fn command(port: u16, args: &[&str]) -> io::Result<Reply> {
    let mut replies = commands(port, &[args])?;
    Ok(replies.remove(0))
}

/// Sends commands on one connection, in order, and reads their replies. One connection matters
/// to commands about the connection's own writes, such as `WAIT`.
pub(crate) fn commands(port: u16, commands: &[&[&str]]) -> io::Result<Vec<Reply>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    stream.write_all(
        &commands
            .iter()
            .flat_map(|args| encode(args))
            .collect::<Vec<u8>>(),
    )?;
    let mut reader = BufReader::new(stream);
    commands.iter().map(|_| read_reply(&mut reader)).collect()
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(reader)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| invalid("empty line"))?;
    match kind {
        "+" => Ok(Reply::Status(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Integer(parse_len(rest)?)),
        "$" => {
            let Ok(len) = usize::try_from(parse_len(rest)?) else {
                return Ok(Reply::Nil);
            };
            let mut bytes = vec![0; len + 2];
            reader.read_exact(&mut bytes)?;
            bytes.truncate(len);
            Ok(Reply::Bulk(bytes))
        }
        "*" => {
            let Ok(len) = usize::try_from(parse_len(rest)?) else {
                return Ok(Reply::Nil);
            };
            (0..len)
                .map(|_| read_reply(reader))
                .collect::<io::Result<_>>()
                .map(Reply::Array)
        }
        _ => Err(invalid(&format!("unknown reply type in {line:?}"))),
    }
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "connection closed before the reply",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn parse_len(text: &str) -> io::Result<i64> {
    text.parse()
        .map_err(|_| invalid(&format!("not a number: {text:?}")))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &str) -> Reply {
        read_reply(&mut wire.as_bytes()).expect("a valid reply")
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["CLUSTER", "KEYSLOT", ""]),
            b"*3\r\n$7\r\nCLUSTER\r\n$7\r\nKEYSLOT\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(parse("+OK\r\n"), Reply::Status("OK".into()));
        assert_eq!(
            parse("-MOVED 1 a:2\r\n"),
            Reply::Error("MOVED 1 a:2".into())
        );
        assert_eq!(parse(":-3\r\n").integer(), Some(-3));
        assert_eq!(parse("$-1\r\n"), Reply::Nil);
        assert_eq!(parse("*-1\r\n"), Reply::Nil);
        assert_eq!(
            parse("*2\r\n$5\r\na\r\nbc\r\n*1\r\n:7\r\n"),
            Reply::Array(vec![
                Reply::Bulk(b"a\r\nbc".to_vec()),
                Reply::Array(vec![Reply::Integer(7)]),
            ])
        );
    }

    #[test]
    fn reads_fields_of_info_text() {
        let text = "# Cluster\r\ncluster_state:ok\r\nsize:3\r\n";
        let info = parse(&format!("${}\r\n{text}\r\n", text.len()));
        assert_eq!(info.field("cluster_state").as_deref(), Some("ok"));
        assert_eq!(info.field("size").as_deref(), Some("3"));
        assert_eq!(info.field("missing"), None);
    }

    #[test]
    fn a_truncated_reply_is_an_error() {
        let err = read_reply(&mut &b"*2\r\n:1\r\n"[..]).expect_err("one item missing");
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    }
}
