//! A small MaxMind DB (format 2.0) writer, so tests build their own GeoIP files.
//!
//! The layout: a binary search tree over the address bits (one node per
//! bit, two records per node), 16 zero bytes, a data section of encoded
//! values, then the metadata marker and the metadata map. IPv4 networks in
//! an IPv6 tree live under `::/96`, where readers look for them. Values are
//! written once per insert, without pointers or de-duplication: test files
//! are tiny.

use ipnet::IpNet;

/// A value of the MaxMind DB data section.
#[derive(Clone, Debug)]
#[allow(
    dead_code,
    reason = "each test binary that includes this file uses a different part"
)]
pub enum Value {
    Str(String),
    Double(f64),
    Float(f32),
    U16(u16),
    U32(u32),
    U64(u64),
    Bool(bool),
    Array(Vec<Value>),
    Map(Vec<(String, Value)>),
}

#[allow(
    dead_code,
    reason = "each test binary that includes this file uses a different part"
)]
impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(s.to_owned())
    }

    pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

// Data section type numbers (spec, "Output Data Section").
const POINTER_FREE_STRING: u8 = 2;
const DOUBLE: u8 = 3;
const UINT16: u8 = 5;
const UINT32: u8 = 6;
const MAP: u8 = 7;
const UINT64: u8 = 9;
const ARRAY: u8 = 11;
const BOOLEAN: u8 = 14;
const FLOAT: u8 = 15;

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

#[derive(Clone, Copy, Debug)]
enum Record {
    Empty,
    Node(usize),
    /// Offset into the data section.
    Data(usize),
}

/// Builds one `.mmdb` file in memory.
#[derive(Debug)]
pub struct MmdbWriter {
    database_type: String,
    ip_version: u16,
    record_size: u16,
    nodes: Vec<[Record; 2]>,
    data: Vec<u8>,
}

#[allow(
    dead_code,
    reason = "each test binary that includes this file uses a different part"
)]
impl MmdbWriter {
    /// `ip_version` is 4 or 6; `record_size` is 24, 28 or 32 bits.
    pub fn new(database_type: &str, ip_version: u16, record_size: u16) -> Self {
        assert!(matches!(ip_version, 4 | 6), "ip_version {ip_version}");
        assert!(
            matches!(record_size, 24 | 28 | 32),
            "record_size {record_size}"
        );
        MmdbWriter {
            database_type: database_type.to_owned(),
            ip_version,
            record_size,
            nodes: vec![[Record::Empty; 2]],
            data: Vec::new(),
        }
    }

    /// Maps every address of `net` to `value`. A later, more specific
    /// network splits an earlier one; a later, broader one replaces what it
    /// covers.
    pub fn insert(&mut self, net: IpNet, value: &Value) {
        let offset = self.data.len();
        encode(value, &mut self.data);
        let (bits, width, len) = self.key(net.trunc());
        assert!(len > 0, "cannot insert a /0");
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (width - 1 - depth)) & 1) as usize;
            if depth == len - 1 {
                self.nodes[node][bit] = Record::Data(offset);
                return;
            }
            node = match self.nodes[node][bit] {
                Record::Node(next) => next,
                // Split: both halves keep what the whole had.
                covering => {
                    let next = self.nodes.len();
                    self.nodes.push([covering; 2]);
                    self.nodes[node][bit] = Record::Node(next);
                    next
                }
            };
        }
    }

    /// The address bits left-aligned in the tree's width, the width, and
    /// the prefix length in the tree.
    fn key(&self, net: IpNet) -> (u128, u32, u32) {
        match (net, self.ip_version) {
            (IpNet::V4(n), 4) => (u32::from(n.addr()) as u128, 32, u32::from(n.prefix_len())),
            (IpNet::V4(n), _) => (
                u32::from(n.addr()) as u128,
                128,
                96 + u32::from(n.prefix_len()),
            ),
            (IpNet::V6(n), 6) => (u128::from(n.addr()), 128, u32::from(n.prefix_len())),
            (IpNet::V6(n), _) => panic!("IPv6 network {n} in an IPv4 database"),
        }
    }

    /// The node count, for tests that corrupt a file on purpose.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The finished file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let node_count = self.nodes.len();
        let value = |r: Record| -> u64 {
            match r {
                Record::Empty => node_count as u64,
                Record::Node(n) => n as u64,
                Record::Data(off) => (node_count + 16 + off) as u64,
            }
        };
        let mut out = Vec::new();
        for [left, right] in &self.nodes {
            let (l, r) = (value(*left), value(*right));
            match self.record_size {
                24 => {
                    out.extend_from_slice(&l.to_be_bytes()[5..]);
                    out.extend_from_slice(&r.to_be_bytes()[5..]);
                }
                28 => {
                    // The middle byte holds the top nibble of each record.
                    out.extend_from_slice(&l.to_be_bytes()[5..]);
                    out.push((((l >> 24) & 0x0f) << 4 | ((r >> 24) & 0x0f)) as u8);
                    out.extend_from_slice(&r.to_be_bytes()[5..]);
                }
                _ => {
                    out.extend_from_slice(&l.to_be_bytes()[4..]);
                    out.extend_from_slice(&r.to_be_bytes()[4..]);
                }
            }
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(METADATA_MARKER);
        encode(&self.metadata(node_count), &mut out);
        out
    }

    fn metadata(&self, node_count: usize) -> Value {
        Value::map([
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(1_700_000_000)),
            ("database_type", Value::str(&self.database_type)),
            (
                "description",
                Value::map([("en", Value::str("leasegate test database"))]),
            ),
            ("ip_version", Value::U16(self.ip_version)),
            ("languages", Value::Array(vec![Value::str("en")])),
            ("node_count", Value::U32(node_count as u32)),
            ("record_size", Value::U16(self.record_size)),
        ])
    }

    /// Writes the file into `dir` and returns its path.
    pub fn write_to(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.to_bytes()).unwrap();
        path
    }
}

/// Control byte(s) for a value of `kind` and `size`, then nothing: the
/// caller appends the payload.
fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push(kind << 5 | size_bits);
    } else {
        // Extended types: type 0 in the control byte, the real type - 7 next.
        out.push(size_bits);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

/// Big-endian without leading zero bytes, as the spec stores unsigned ints.
fn uint(kind: u8, v: u64, out: &mut Vec<u8>) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(kind, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(s) => {
            control(POINTER_FREE_STRING, s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Double(d) => {
            control(DOUBLE, 8, out);
            out.extend_from_slice(&d.to_be_bytes());
        }
        Value::Float(f) => {
            control(FLOAT, 4, out);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::U16(v) => uint(UINT16, u64::from(*v), out),
        Value::U32(v) => uint(UINT32, u64::from(*v), out),
        Value::U64(v) => uint(UINT64, *v, out),
        Value::Bool(b) => control(BOOLEAN, usize::from(*b), out),
        Value::Array(items) => {
            control(ARRAY, items.len(), out);
            items.iter().for_each(|v| encode(v, out));
        }
        Value::Map(pairs) => {
            control(MAP, pairs.len(), out);
            for (k, v) in pairs {
                encode(&Value::Str(k.clone()), out);
                encode(v, out);
            }
        }
    }
}
