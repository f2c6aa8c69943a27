//! The protocol's words, typed: operations, their requests and replies, written and read by the
//! server and the client alike.
//!
//! Nothing outside this module spells an op name or a reply key: the server parses a header into
//! a [`Request`] and answers with a reply type, the client writes a request type and parses the
//! reply type. Requests borrow their strings from the header text, so parsing one allocates
//! nothing in the common case.
//!
//! Every type here serialises to the fields of a header (see [`HeaderWriter::fields`]); the
//! envelope (`ok`, `id`, the size key) is added by whoever writes the frame.
//!
//! [`HeaderWriter::fields`]: crate::HeaderWriter::fields

use std::borrow::Cow;
use std::fmt;

use bytes::BytesMut;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::{ErrorCode, Header, HeaderWriter};

/// The operations of the framed protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// A round trip.
    Ping,
    /// The body comes back.
    Echo,
    /// Fresh bytes to sign for a key login.
    Challenge,
    /// Logging in.
    Login,
    /// A remote command.
    Exec,
    /// Storing a file.
    Put,
    /// Fetching a stored file.
    Get,
    /// A page of the stored files.
    List,
    /// Whether a file is stored, and what is held of an upload.
    Stat,
    /// Removing a stored file.
    Delete,
    /// Giving a stored file another name.
    Rename,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 11] = [
        Op::Ping,
        Op::Echo,
        Op::Challenge,
        Op::Login,
        Op::Exec,
        Op::Put,
        Op::Get,
        Op::List,
        Op::Stat,
        Op::Delete,
        Op::Rename,
    ];

    /// The word in a request's `op`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Ping => "ping",
            Op::Echo => "echo",
            Op::Challenge => "challenge",
            Op::Login => "login",
            Op::Exec => "exec",
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list",
            Op::Stat => "stat",
            Op::Delete => "delete",
            Op::Rename => "rename",
        }
    }

    /// The operation named `word`.
    pub fn parse(word: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == word)
    }

    /// Whether the operation carries a body of its own (all others refuse one).
    pub const fn takes_body(self) -> bool {
        matches!(self, Op::Echo | Op::Put)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Op {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A request, as the server reads it from a header.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request<'a> {
    /// `ping`.
    Ping,
    /// `echo`: the body comes back.
    Echo,
    /// `challenge`.
    Challenge,
    /// `login`.
    Login(LoginRequest<'a>),
    /// `exec`.
    Exec(ExecRequest<'a>),
    /// `put`, or the tutorials' upload (a header with `file_name` and `file_size`, no `op`).
    Put(PutRequest<'a>),
    /// `get`.
    Get(GetRequest<'a>),
    /// `list`.
    List(ListRequest<'a>),
    /// `stat`.
    Stat(StatRequest<'a>),
    /// `delete`.
    Delete(DeleteRequest<'a>),
    /// `rename`.
    Rename(RenameRequest<'a>),
}

/// Why a header is not a request this server can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The fields are missing, mistyped or contradictory.
    #[error("{0}")]
    Bad(String),
    /// The `op` is not one of ours.
    #[error("unknown op {0}")]
    UnknownOp(String),
}

impl RequestError {
    /// The reply code.
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::Bad(_) => ErrorCode::BadRequest,
            RequestError::UnknownOp(_) => ErrorCode::UnknownOp,
        }
    }
}

impl<'a> Request<'a> {
    /// Reads the request a header carries.
    ///
    /// # Errors
    ///
    /// [`RequestError`] when `op` is not a string or not ours, a field is missing or
    /// mistyped, or an operation that takes no body declares one.
    pub fn parse(header: &'a Header) -> Result<Request<'a>, RequestError> {
        let op = Request::op_of(header)?;
        Request::parse_as(header, op)
    }

    /// The operation a header asks for, before its fields are read: `None` for a header with
    /// no `op` (the tutorials' upload, if it has its fields).
    ///
    /// # Errors
    ///
    /// [`RequestError::Bad`] when `op` is not a string, [`RequestError::UnknownOp`] when it
    /// is not ours.
    pub fn op_of(header: &Header) -> Result<Option<Op>, RequestError> {
        match header.op() {
            Ok(Some(word)) => Op::parse(word)
                .map(Some)
                .ok_or_else(|| RequestError::UnknownOp(quoted(word))),
            Ok(None) => Ok(None),
            Err(err) => Err(RequestError::Bad(err.to_string())),
        }
    }

    /// Reads the fields of a request for `op` (as [`Request::op_of`] found it).
    ///
    /// # Errors
    ///
    /// As [`Request::parse`].
    pub fn parse_as(header: &'a Header, op: Option<Op>) -> Result<Request<'a>, RequestError> {
        let Some(op) = op else {
            return legacy_upload(header);
        };
        if !op.takes_body() && header.body_len() > 0 {
            return Err(RequestError::Bad(format!("{op} takes no body")));
        }
        let bad = |err: serde_json::Error| RequestError::Bad(err.to_string());
        Ok(match op {
            Op::Ping => Request::Ping,
            Op::Echo => Request::Echo,
            Op::Challenge => Request::Challenge,
            Op::Login => Request::Login(header.parse().map_err(bad)?),
            Op::Exec => Request::Exec(header.parse().map_err(bad)?),
            Op::Put => Request::Put(header.parse().map_err(bad)?),
            Op::Get => Request::Get(header.parse().map_err(bad)?),
            Op::List => Request::List(header.parse().map_err(bad)?),
            Op::Stat => Request::Stat(header.parse().map_err(bad)?),
            Op::Delete => Request::Delete(header.parse().map_err(bad)?),
            Op::Rename => Request::Rename(header.parse().map_err(bad)?),
        })
    }

    /// The operation.
    pub fn op(&self) -> Op {
        match self {
            Request::Ping => Op::Ping,
            Request::Echo => Op::Echo,
            Request::Challenge => Op::Challenge,
            Request::Login(_) => Op::Login,
            Request::Exec(_) => Op::Exec,
            Request::Put(_) => Op::Put,
            Request::Get(_) => Op::Get,
            Request::List(_) => Op::List,
            Request::Stat(_) => Op::Stat,
            Request::Delete(_) => Op::Delete,
            Request::Rename(_) => Op::Rename,
        }
    }

    /// Writes the request's `op` and fields (the caller finishes the header with the body
    /// length).
    pub fn write(&self, header: &mut HeaderWriter<'_>) {
        header.field("op", &self.op());
        match self {
            Request::Ping | Request::Echo | Request::Challenge => {}
            Request::Login(request) => {
                header.fields(request);
            }
            Request::Exec(request) => {
                header.fields(request);
            }
            Request::Put(request) => {
                header.fields(request);
            }
            Request::Get(request) => {
                header.fields(request);
            }
            Request::List(request) => {
                header.fields(request);
            }
            Request::Stat(request) => {
                header.fields(request);
            }
            Request::Delete(request) => {
                header.fields(request);
            }
            Request::Rename(request) => {
                header.fields(request);
            }
        }
    }
}

/// The tutorials' upload: `file_name` and `file_size` with no `op`. `file_size` is only
/// required (it is the body length, which the decoder has already taken): without it, a header
/// is not an upload.
fn legacy_upload(header: &Header) -> Result<Request<'_>, RequestError> {
    #[derive(Deserialize)]
    struct LegacyUpload<'a> {
        #[serde(borrow)]
        file_name: Cow<'a, str>,
        #[serde(rename = "file_size")]
        _file_size: u64,
    }
    let upload: LegacyUpload<'_> = header
        .parse()
        .map_err(|_| RequestError::Bad("request has no `op`".to_owned()))?;
    Ok(Request::Put(PutRequest {
        name: upload.file_name,
        ..PutRequest::default()
    }))
}

/// `login`: `user` with `password`, or `user` with `key` and `signature` over a challenge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest<'a> {
    /// The user name.
    #[serde(borrow)]
    pub user: Cow<'a, str>,
    /// A password.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Cow<'a, str>>,
    /// A public key, `sockit-ed25519` hex.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Cow<'a, str>>,
    /// The key's signature over the login message, hex.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Cow<'a, str>>,
}

/// `exec`: a command line for `sh -c`, with an optional time limit in seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest<'a> {
    /// The command line.
    #[serde(borrow)]
    pub cmd: Cow<'a, str>,
    /// Seconds the command may run (the server may allow less).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// The command's standard input follows in [`ExecInput`] frames, closed by the end frame;
    /// without it, its standard input is empty.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin: bool,
}

/// One frame after an `exec` with `stdin`: a piece of the command's standard input (its
/// body), or the end of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecInput {
    /// This many bytes (at least 1) of input follow.
    Data(u64),
    /// The end frame, `{"end":true}`: the input is over.
    End,
}

/// The end frame of an `exec`'s standard input: `{"end":true}`, no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExecInputEnd {
    /// Always `true`: marks the end frame.
    pub end: bool,
}

impl ExecInputEnd {
    /// The end frame.
    pub const FRAME: ExecInputEnd = ExecInputEnd { end: true };
}

impl ExecInput {
    /// Reads a frame of an `exec`'s standard input: `{"size":n}` with n bytes, or
    /// `{"end":true}`.
    ///
    /// # Errors
    ///
    /// When the frame is no such frame (another key, `end` not `true`, an input frame of 0
    /// bytes, an end frame with a body): the stream cannot be followed after it.
    pub fn parse(frame: &Header) -> Result<ExecInput, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default, rename = "size")]
            _size: Option<u64>,
            #[serde(default)]
            end: Option<bool>,
        }
        let fields: Fields = frame.parse().map_err(|err| {
            format!("expected an exec input frame {{\"size\":n}} or {{\"end\":true}}: {err}")
        })?;
        match (fields.end, frame.body_len()) {
            (Some(true), 0) => Ok(ExecInput::End),
            (Some(true), _) => Err("the end frame of exec input has no body".into()),
            (Some(false), _) => Err("`end` is true or absent".into()),
            (None, 0) => Err("an exec input frame carries at least 1 byte".into()),
            (None, size) => Ok(ExecInput::Data(size)),
        }
    }
}

/// `put`: the body is the file from `offset` to its end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PutRequest<'a> {
    /// The stored name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Where the body starts in the file; more than 0 resumes.
    #[serde(default)]
    pub offset: u64,
    /// BLAKE3 of the whole file, hex, checked before it is stored.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Cow<'a, str>>,
    /// The hash follows the body in a [`PutTrailer`] frame.
    #[serde(default, skip_serializing_if = "is_false")]
    pub trailer: bool,
    /// Replace a stored file of the same name.
    #[serde(default)]
    pub overwrite: bool,
    /// The file follows in [`ChunkFrame`]s closed by a [`ChunkEnd`], for a length not known
    /// in advance.
    #[serde(default, skip_serializing_if = "is_false")]
    pub chunked: bool,
}

/// One frame after a chunked `put`: a chunk of the file (its body), or the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkFrame {
    /// A chunk of this many bytes (at least 1) follows.
    Chunk(u64),
    /// The end frame: the total length and hash the client declares.
    End(ChunkEnd),
    /// An end frame whose `length` or `hash` is missing or malformed (why, in words): the
    /// sequence is over and the stream in step, but nothing can be stored.
    BadEnd(String),
}

/// The end frame of a chunked `put`: `{"end":true,"length":L,"hash":"<hex>"}`, no body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkEnd {
    /// Always `true`: marks the end frame.
    pub end: bool,
    /// The total of the chunks.
    pub length: u64,
    /// BLAKE3 of the whole file, hex.
    pub hash: String,
}

impl ChunkFrame {
    /// Reads a frame of a chunked `put`'s sequence.
    ///
    /// # Errors
    ///
    /// When the frame is no such frame (a key other than `size`, `end`, `length` and `hash`;
    /// `end` not `true`; a chunk of 0 bytes; an end frame with a body): the stream cannot be
    /// followed after it.
    pub fn parse(frame: &Header) -> Result<ChunkFrame, String> {
        /// The keys a frame of the sequence may have; any other key breaks the sequence.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields<'a> {
            #[serde(default, rename = "size")]
            _size: Option<u64>,
            #[serde(default)]
            end: Option<bool>,
            #[serde(default)]
            length: Option<u64>,
            #[serde(borrow, default)]
            hash: Option<Cow<'a, str>>,
        }
        let fields: Fields<'_> = frame.parse().map_err(|err| {
            format!(
                "expected a chunk frame {{\"size\":n}} or the end frame of a chunked put: {err}"
            )
        })?;
        match fields.end {
            Some(true) => {
                if frame.body_len() > 0 {
                    return Err("the end frame of a chunked put has no body".into());
                }
                Ok(
                    match ChunkEnd::from_fields(fields.length, fields.hash.as_deref()) {
                        Ok(end) => ChunkFrame::End(end),
                        Err(why) => ChunkFrame::BadEnd(why),
                    },
                )
            }
            Some(false) => Err("`end` is only ever true, in the end frame".into()),
            None if fields.length.is_some() || fields.hash.is_some() => {
                Err("a chunk frame has only `size`; `length` and `hash` go in the end frame".into())
            }
            None if frame.body_len() == 0 => {
                Err("a chunk frame carries at least one byte (`size` >= 1)".into())
            }
            None => Ok(ChunkFrame::Chunk(frame.body_len())),
        }
    }
}

impl ChunkEnd {
    /// The end frame for `length` bytes hashing to `hash`.
    pub fn new(length: u64, hash: String) -> ChunkEnd {
        ChunkEnd {
            end: true,
            length,
            hash,
        }
    }

    /// The end frame's `length` and `hash`, checked (64 hex digits).
    fn from_fields(length: Option<u64>, hash: Option<&str>) -> Result<ChunkEnd, String> {
        let length = length.ok_or("the end frame needs `length`, the total of the chunks")?;
        let hash = hash.ok_or("the end frame needs `hash`, the BLAKE3 of the whole file")?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the end frame's `hash` must be 64 hexadecimal digits (BLAKE3)".into());
        }
        Ok(ChunkEnd::new(length, hash.to_owned()))
    }
}

/// The frame after a `put` body with `trailer`: the whole file's hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutTrailer<'a> {
    /// BLAKE3 of the whole file, hex.
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
}

/// `get`: the file from `offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRequest<'a> {
    /// The stored name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Where the body should start.
    #[serde(default)]
    pub offset: u64,
    /// A resume: the hash of the file the held bytes belong to; the body starts at `offset`
    /// only if the stored file still has it, else at 0.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub if_hash: Option<Cow<'a, str>>,
}

/// `list`: a page of the stored files after a name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListRequest<'a> {
    /// Only names strictly greater than this (byte order).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Cow<'a, str>>,
    /// Most entries in the page: a positive integer; larger than any integer type reads as
    /// `u64::MAX` (the server clamps it).
    #[serde(
        default,
        deserialize_with = "positive_integer",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u64>,
}

/// `stat`: whether `name` is stored, and with `length`, what is held of such an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatRequest<'a> {
    /// The stored name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// The whole length of an upload to ask about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// `delete`: remove the stored file `name`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRequest<'a> {
    /// The stored name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// `rename`: the stored file `name` becomes `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenameRequest<'a> {
    /// The stored name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Its new name.
    #[serde(borrow)]
    pub to: Cow<'a, str>,
    /// Replace a stored file named `to`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub overwrite: bool,
}

/// The reply to `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReply {
    /// The name that was removed.
    pub name: String,
}

/// The reply to `rename`: the file under its new name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameReply {
    /// The new name.
    pub name: String,
    /// Its length.
    pub length: u64,
    /// Its BLAKE3, hex.
    pub hash: String,
}

/// The reply to `put`, once the file is stored and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    /// The stored name.
    pub name: String,
    /// Its length.
    pub length: u64,
    /// Its BLAKE3, hex.
    pub hash: String,
}

/// The reply to `get`, before the body (the file from `offset`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetReply {
    /// The stored name.
    pub name: String,
    /// The whole file's length.
    pub length: u64,
    /// The whole file's BLAKE3, hex.
    pub hash: String,
    /// Where the body starts.
    pub offset: u64,
    /// Permission bits.
    #[serde(default)]
    pub mode: Option<u32>,
    /// Modification time, seconds since the Unix epoch.
    #[serde(default)]
    pub modified: Option<u64>,
}

/// The reply to `list`, before the body (a JSON array of entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReply {
    /// Entries in this page.
    pub count: u64,
    /// Whether entries after this page exist (absent from servers that do not page).
    #[serde(default)]
    pub more: bool,
}

/// The reply to `stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatReply {
    /// The name asked about.
    pub name: String,
    /// Whether a file of that name is stored.
    pub exists: bool,
    /// Its length, if stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Its modification time, if stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
    /// Bytes held of an upload of the asked length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<u64>,
}

/// The reply to `challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeReply {
    /// 32 random bytes, hex.
    pub challenge: String,
}

/// The reply to a successful `login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginReply {
    /// Who the connection is now.
    pub user: String,
}

/// Which of a command's outputs a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The word on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One frame of an `exec` reply: output (with a body), or the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExecFrame {
    /// A piece of output: the body.
    Output {
        /// Which output.
        stream: Stream,
    },
    /// The command started, and takes its standard input now (only for `"stdin":true`).
    Started {
        /// Always `true`.
        started: bool,
    },
    /// The command ended.
    Exit(ExecExit),
}

/// The frame that ends an `exec` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecExit {
    /// The exit status, when the command exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The signal's name (`SIGKILL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// The output cap was reached and the command killed.
    #[serde(default)]
    pub truncated: bool,
    /// Its time ran out and it was killed.
    #[serde(default)]
    pub timed_out: bool,
    /// How long it ran.
    #[serde(default)]
    pub elapsed_ms: u64,
}

/// The reply of the tutorials' raw remote-command listener (`--legacy-exec`): the output's
/// length under every size key their clients read, and how the command ended. The output
/// (stdout, then stderr) is the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyExecReply {
    /// `size` for an empty body (the frame's own `size` is written only for a non-empty one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The body's length, for the clients that read `data_size`.
    pub data_size: u64,
    /// The body's length, for the clients that read `total_size`.
    pub total_size: u64,
    /// The exit status, when the command exited (255 when it could not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The output cap was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Its time ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
}

impl LegacyExecReply {
    /// The reply for a body of `len` bytes, with nothing said about the command yet.
    pub fn for_body(len: u64) -> LegacyExecReply {
        LegacyExecReply {
            size: (len == 0).then_some(0),
            data_size: len,
            total_size: len,
            exit_code: None,
            signal: None,
            truncated: None,
            timed_out: None,
        }
    }
}

/// A failed reply's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply<'a> {
    /// The stable word (see [`ErrorCode`]); a word this version does not know is kept as is.
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    /// A sentence for people.
    #[serde(borrow)]
    pub error: Cow<'a, str>,
    /// With `rate_limited`: seconds to wait before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<f64>,
}

impl ErrorReply<'_> {
    /// The code, when it is one this version knows.
    pub fn known_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }
}

impl<'a> ErrorReply<'a> {
    /// The error reply for `code`, with a sentence for people.
    pub fn new(code: ErrorCode, error: &'a str) -> ErrorReply<'a> {
        ErrorReply {
            code: Cow::Borrowed(code.as_str()),
            error: Cow::Borrowed(error),
            retry_after: None,
        }
    }
}

/// Starts a successful reply: `"ok":true` and the request's `id` (JSON text, copied as it
/// came); the caller adds the reply's fields and finishes it with the body length.
pub fn ok_reply<'a>(dst: &'a mut BytesMut, id: Option<&str>) -> HeaderWriter<'a> {
    let mut header = HeaderWriter::new(dst);
    header.raw_field("ok", "true");
    if let Some(id) = id {
        header.raw_field("id", id);
    }
    header
}

/// Appends a whole failed reply, with no body: `"ok":false`, the request's `id`, then the
/// error's fields.
pub fn error_reply(dst: &mut BytesMut, id: Option<&str>, error: &ErrorReply<'_>) {
    let mut header = HeaderWriter::new(dst);
    header.field("ok", &false);
    if let Some(id) = id {
        header.raw_field("id", id);
    }
    header
        .fields(error)
        .finish(0)
        .expect("an error reply of strings and a number always encodes");
}

/// Reads whether a reply succeeded: its `ok`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ReplyStatus {
    /// `true` for success.
    pub ok: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A positive integer in plain digits; one past `u64` reads as `u64::MAX`.
fn positive_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(raw) = Option::<&RawValue>::deserialize(deserializer)? else {
        return Ok(None);
    };
    list_limit(raw.get())
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A `list` page's `limit` written as `text`: a positive integer in plain digits, where one
/// past `u64` reads as `u64::MAX` (the server takes at most its own largest page anyway).
///
/// # Errors
///
/// The refusal's words, for anything else.
pub fn list_limit(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`limit` must be a positive integer, not {}",
            text.chars().take(40).collect::<String>()
        ));
    }
    match text.parse::<u64>() {
        Ok(0) => Err("`limit` must be at least 1".to_owned()),
        Ok(limit) => Ok(limit),
        Err(_) => Ok(u64::MAX),
    }
}

/// A peer-supplied word, quoted, escaped and shortened for an error message.
pub fn quoted(word: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut shown: String = word.chars().take(MAX_CHARS).collect();
    if shown.len() < word.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::Limits;

    fn header(json: &str) -> Header {
        Header::parse_json(Bytes::copy_from_slice(json.as_bytes()), &Limits::default()).unwrap()
    }

    #[test]
    fn every_op_round_trips_through_its_word() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.as_str()), Some(op));
        }
        assert_eq!(Op::parse("PING"), None);
    }

    #[test]
    fn requests_written_by_the_client_parse_back_on_the_server() {
        let get = Request::Get(GetRequest {
            name: "a.txt".into(),
            offset: 5,
            if_hash: None,
        });
        let mut buf = BytesMut::new();
        let mut writer = HeaderWriter::new(&mut buf);
        get.write(&mut writer);
        writer.finish(0).unwrap();
        assert_eq!(&buf[4..], br#"{"op":"get","name":"a.txt","offset":5}"#);
        let parsed = header(std::str::from_utf8(&buf[4..]).unwrap());
        match Request::parse(&parsed).unwrap() {
            Request::Get(request) => assert_eq!((&*request.name, request.offset), ("a.txt", 5)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delete_and_rename_parse_with_their_fields() {
        match Request::parse(&header(r#"{"op":"delete","name":"a"}"#)).unwrap() {
            Request::Delete(request) => assert_eq!(&*request.name, "a"),
            other => panic!("{other:?}"),
        }
        match Request::parse(&header(r#"{"op":"rename","name":"a","to":"b"}"#)).unwrap() {
            Request::Rename(request) => {
                assert_eq!(
                    (&*request.name, &*request.to, request.overwrite),
                    ("a", "b", false)
                );
            }
            other => panic!("{other:?}"),
        }
        let rename = Request::Rename(RenameRequest {
            name: "a".into(),
            to: "b".into(),
            overwrite: true,
        });
        let mut buf = BytesMut::new();
        let mut writer = HeaderWriter::new(&mut buf);
        rename.write(&mut writer);
        writer.finish(0).unwrap();
        assert_eq!(
            &buf[4..],
            br#"{"op":"rename","name":"a","to":"b","overwrite":true}"#
        );
        for bad in [
            r#"{"op":"delete"}"#,
            r#"{"op":"rename","name":"a"}"#,
            r#"{"op":"rename","name":"a","to":"b","size":1}"#,
        ] {
            assert_eq!(
                Request::parse(&header(bad)).unwrap_err().code(),
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_requests_say_why() {
        let err = Request::parse(&header(r#"{"op":"fly"}"#)).unwrap_err();
        assert_eq!(err, RequestError::UnknownOp("\"fly\"".into()));
        let err = Request::parse(&header(r#"{"op":"get"}"#)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest);
        let err = Request::parse(&header(r#"{"op":"ping","size":1}"#)).unwrap_err();
        assert_eq!(err, RequestError::Bad("ping takes no body".into()));
        let err = Request::parse(&header(r#"{"id":1}"#)).unwrap_err();
        assert_eq!(err, RequestError::Bad("request has no `op`".into()));
    }

    #[test]
    fn the_tutorial_upload_is_a_put() {
        let parsed = header(r#"{"file_name":"a.mp4","file_size":3}"#);
        match Request::parse(&parsed).unwrap() {
            Request::Put(put) => {
                assert_eq!(&*put.name, "a.mp4");
                assert!(!put.overwrite && !put.trailer && put.hash.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_limits_are_positive_plain_integers_clamped_past_u64() {
        let limit = |json: &str| match Request::parse(&header(json)) {
            Ok(Request::List(list)) => Ok(list.limit),
            Ok(other) => panic!("{other:?}"),
            Err(err) => Err(err),
        };
        assert_eq!(limit(r#"{"op":"list"}"#), Ok(None));
        assert_eq!(limit(r#"{"op":"list","limit":null}"#), Ok(None));
        assert_eq!(limit(r#"{"op":"list","limit":7}"#), Ok(Some(7)));
        assert_eq!(
            limit(r#"{"op":"list","limit":99999999999999999999999}"#),
            Ok(Some(u64::MAX))
        );
        for bad in ["0", "-1", "1.5", "1e3", "\"3\"", "true", "[1]"] {
            assert!(
                limit(&format!(r#"{{"op":"list","limit":{bad}}}"#)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_carry_ok_and_the_request_id_first() {
        let mut buf = BytesMut::new();
        ok_reply(&mut buf, Some("7"))
            .fields(&LoginReply { user: "al".into() })
            .finish(0)
            .unwrap();
        assert_eq!(&buf[4..], br#"{"ok":true,"id":7,"user":"al"}"#);
        let mut buf = BytesMut::new();
        let error = ErrorReply {
            retry_after: Some(1.5),
            ..ErrorReply::new(ErrorCode::RateLimited, "wait")
        };
        error_reply(&mut buf, None, &error);
        assert_eq!(
            &buf[4..],
            br#"{"ok":false,"code":"rate_limited","error":"wait","retry_after":1.5}"#
        );
    }

    #[test]
    fn exec_input_frames_are_data_or_the_end() {
        assert_eq!(
            ExecInput::parse(&header(r#"{"size":5}"#)),
            Ok(ExecInput::Data(5))
        );
        assert_eq!(
            ExecInput::parse(&header(r#"{"end":true}"#)),
            Ok(ExecInput::End)
        );
        for bad in [
            r#"{}"#,
            r#"{"size":0}"#,
            r#"{"end":false}"#,
            r#"{"end":true,"size":3}"#,
            r#"{"size":3,"op":"ping"}"#,
        ] {
            assert!(ExecInput::parse(&header(bad)).is_err(), "{bad}");
        }
        let request: ExecRequest<'_> = serde_json::from_str(r#"{"cmd":"cat"}"#).unwrap();
        assert!(!request.stdin);
        let request: ExecRequest<'_> =
            serde_json::from_str(r#"{"cmd":"cat","stdin":true}"#).unwrap();
        assert!(request.stdin);
    }

    #[test]
    fn exec_frames_are_output_or_exit() {
        let output: ExecFrame = serde_json::from_str(r#"{"ok":true,"stream":"stderr"}"#).unwrap();
        assert_eq!(
            output,
            ExecFrame::Output {
                stream: Stream::Stderr
            }
        );
        let exit: ExecFrame =
            serde_json::from_str(r#"{"ok":true,"exit_code":3,"elapsed_ms":4}"#).unwrap();
        match exit {
            ExecFrame::Exit(exit) => assert_eq!((exit.exit_code, exit.elapsed_ms), (Some(3), 4)),
            other => panic!("{other:?}"),
        }
    }
}
