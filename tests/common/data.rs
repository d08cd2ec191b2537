//! Deterministic data: [`Rng`] (seeded), [`write_random_file`], [`make_tree`] (nested and empty dirs, empty files,
//! unicode and odd names, chunk-boundary sizes, a big multi-level file, symlinks, a HAMT-sized directory), and the
//! hashes tests compare against ([`sha256_hex`], [`raw_cid`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// SplitMix64: tiny, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&v[..rest.len()]);
    }
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Writes `len` pseudo-random bytes (a function of `seed` only) to `path`.
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let mut f = io::BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// What [`make_tree`] writes.
#[derive(Clone, Debug)]
pub struct TreeSpec {
    pub seed: u64,
    /// Size of `big.bin` (0: none). Tens of MiB give multi-level DAGs with 256 KiB chunks and 174 links
    /// (more than 43.5 MiB), or with small chunks and fan-outs.
    pub big_file: u64,
    /// Relative, directory and dangling symlinks (Helia follows symlinks when importing, so not for Helia).
    pub symlinks: bool,
    /// A name with a backslash (Helia treats `\` as a separator, so not for Helia).
    pub backslash: bool,
    /// Number of entries in `many/` (0: none); a few thousand make a HAMT with a lowered shard threshold.
    pub hamt_entries: usize,
}

impl TreeSpec {
    /// Everything Kubo preserves.
    pub fn kubo(seed: u64, big_file: u64) -> Self {
        TreeSpec {
            seed,
            big_file,
            symlinks: true,
            backslash: true,
            hamt_entries: 0,
        }
    }
    /// Everything Helia preserves (no symlinks, no backslashes).
    pub fn helia(seed: u64, big_file: u64) -> Self {
        TreeSpec {
            seed,
            big_file,
            symlinks: false,
            backslash: false,
            hamt_entries: 0,
        }
    }
    /// Only a directory `many/` with `n` small files (for HAMT tests).
    pub fn hamt(seed: u64, n: usize) -> Self {
        TreeSpec {
            seed,
            big_file: 0,
            symlinks: false,
            backslash: false,
            hamt_entries: n,
        }
    }
}

/// Sizes around the chunk sizes in use (256 KiB, 1 MiB, 100000) and page boundaries.
pub const EDGE_SIZES: &[u64] = &[
    1, 2, 1023, 1024, 4095, 4096, 4097, 65_536, 99_999, 100_000, 100_001, 262_143, 262_144,
    262_145, 1_048_575, 1_048_576, 1_048_577, 2_500_000,
];

/// Odd but portable names (no `/`, NUL; backslash separately).
pub const ODD_NAMES: &[&str] = &[
    "name with spaces.txt",
    " leading space",
    "trailing space ",
    "ünïcødé-名前-🎉.txt",
    "Ελληνικά",
    "q?mark",
    "star*",
    "[brackets]",
    "{braces}",
    "it's",
    "quote\"d",
    "pct%20x",
    "hash#x",
    "amp&x=1+2",
    "tab\tx",
    "-dash",
    "~tilde",
    "a:colon",
    "semi;colon",
    "dollar$x",
    "...",
    "..dots",
    ".hidden",
];

/// Writes a test tree into `root` (which must not exist or be empty). Returns `root`.
///
/// Contents: `hello.txt`, `empty.txt` (0 bytes), `empty-dir/`, `a/b/c/d/deep.bin`, `a/empty-inside/`,
/// `sizes/<n>.bin` for [`EDGE_SIZES`], [`ODD_NAMES`] files plus a directory `dir with spaces/ñ/`, `big.bin`,
/// symlinks, and `many/` per the spec.
pub fn make_tree(root: &Path, spec: &TreeSpec) -> PathBuf {
    fs::create_dir_all(root).unwrap();
    let mut seed = spec.seed.wrapping_mul(1_000_003);
    let mut next_seed = || {
        seed = seed.wrapping_add(1);
        seed
    };
    if spec.hamt_entries > 0 {
        let many = root.join("many");
        fs::create_dir_all(&many).unwrap();
        let mut rng = Rng::new(spec.seed);
        for i in 0..spec.hamt_entries {
            // Varied name lengths and a non-ASCII character, to exercise HAMT hashing of UTF-8 names.
            let pad = "x".repeat(rng.below(24) as usize);
            let name = format!("entry-{i:05}-{pad}-ß.txt");
            let len = rng.below(300);
            write_random_file(&many.join(name), len, next_seed());
        }
        return root.to_path_buf();
    }
    fs::write(root.join("hello.txt"), b"hello world\n").unwrap();
    File::create(root.join("empty.txt")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("a/empty-inside")).unwrap();
    write_random_file(&root.join("a/b/c/d/deep.bin"), 5000, next_seed());
    fs::write(root.join("a/b/sibling.txt"), b"sibling\n").unwrap();
    for &n in EDGE_SIZES {
        write_random_file(&root.join("sizes").join(format!("{n}.bin")), n, next_seed());
    }
    for name in ODD_NAMES {
        let len = 1 + (next_seed() % 3000);
        write_random_file(&root.join("odd").join(name), len, next_seed());
    }
    if spec.backslash {
        fs::write(root.join("odd").join("back\\slash"), b"backslash\n").unwrap();
    }
    let deep = root.join("dir with spaces").join("ñ");
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("file.txt"), "ñandú\n").unwrap();
    if spec.big_file > 0 {
        write_random_file(&root.join("big.bin"), spec.big_file, next_seed());
    }
    if spec.symlinks {
        symlink("hello.txt", root.join("link-to-hello")).unwrap();
        symlink("a/b", root.join("link-to-dir")).unwrap();
        symlink("does/not/exist", root.join("dangling")).unwrap();
        symlink("/nonexistent/absolute/target", root.join("abs-dangling")).unwrap();
        symlink("../../hello.txt", root.join("a/b/up-link")).unwrap();
    }
    root.to_path_buf()
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// CIDv1 (raw codec, sha2-256) of `data`, as a string.
pub fn raw_cid(data: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    let mh = multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v1(0x55, mh).to_string()
}
