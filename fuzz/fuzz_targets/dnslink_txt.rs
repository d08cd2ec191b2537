#![no_main]
//! DNSLink: a DNS response message (wire format, what a `--dns` server can send) decoded and
//! reduced to the winning `dnslink=` TXT entry, and the domain checks and path cleaning of a
//! lookup: never a panic, and an accepted link is a clean content path (see
//! `ipfs_mount::names::dnslink::fuzz_dns_answer`). Input: the domain, a NUL, the message.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (domain, message) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"example.org"[..], data),
    };
    let domain = String::from_utf8_lossy(domain);
    ipfs_mount::names::dnslink::fuzz_dns_answer(&domain, message);
});
