pub mod dnslink;
