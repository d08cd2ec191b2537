//! Presentation for plain responses: content types by file name, `Content-Disposition`,
//! and the HTML listing of a directory without `index.html`.

use cid::Cid;

use super::request::percent_encode_segment;

/// Bump when the listing's HTML changes (it is part of the listing's ETag).
pub(super) const LISTING_VERSION: &str = "ipfs-mount-1";

/// A content type for a file name, by extension; `None` when unknown.
pub(super) fn content_type(name: &[u8]) -> Option<&'static str> {
    let name = std::str::from_utf8(name).ok()?;
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "md" | "markdown" => "text/markdown; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "jsonl" | "ndjson" => "application/x-ndjson",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "zst" => "application/zstd",
        "tar" => "application/x-tar",
        "parquet" => "application/vnd.apache.parquet",
        "arrow" | "feather" => "application/vnd.apache.arrow.file",
        "car" => "application/vnd.ipld.car",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        _ => return None,
    })
}

/// Content a browser runs as a document of the origin it came from (scripts, forms, links):
/// HTML, SVG and XML (which may be XHTML).
pub(super) fn is_active(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html" | "image/svg+xml" | "application/xml" | "text/xml" | "application/xhtml+xml"
    )
}

/// `Content-Disposition` with `filename` (RFC 6266 / 8187: an ASCII fallback with other
/// characters as `_`, plus `filename*` in UTF-8 when the name is not plain ASCII).
pub(super) fn content_disposition(kind: &str, filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ascii == filename {
        format!("{kind}; filename=\"{ascii}\"")
    } else {
        format!(
            "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}",
            percent_encode_segment(filename.as_bytes())
        )
    }
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A plain HTML listing. `path` is the request path (already ending in `/`); links are
/// relative, so they work under `/ipfs/…` and `/ipns/…` alike.
pub(super) fn html(path: &str, dir: &Cid, entries: &[(Vec<u8>, Cid, Option<u64>)]) -> String {
    let title = escape_html(path);
    let mut out = String::with_capacity(512 + entries.len() * 160);
    out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    out.push_str(&title);
    out.push_str("</title></head><body>\n<h1>Index of ");
    out.push_str(&title);
    out.push_str("</h1>\n<p><code>");
    out.push_str(&dir.to_string());
    out.push_str("</code></p>\n<table>\n<tr><th>name</th><th>CID</th><th>size</th></tr>\n");
    for (name, cid, tsize) in entries {
        let shown = escape_html(&String::from_utf8_lossy(name));
        let href = percent_encode_segment(name);
        let size = tsize.map(|s| s.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "<tr><td><a href=\"./{href}\">{shown}</a></td><td><code>{cid}</code></td><td>{size}</td></tr>\n"
        ));
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_disposition() {
        assert_eq!(content_type(b"a.HTML"), Some("text/html; charset=utf-8"));
        assert_eq!(
            content_type(b"x.parquet"),
            Some("application/vnd.apache.parquet")
        );
        assert_eq!(content_type(b"noext"), None);
        assert_eq!(content_type(b"a.weird"), None);
        assert_eq!(
            content_disposition("attachment", "a.car"),
            "attachment; filename=\"a.car\""
        );
        assert_eq!(
            content_disposition("inline", "tést\".pdf"),
            "inline; filename=\"t_st_.pdf\"; filename*=UTF-8''t%C3%A9st%22.pdf"
        );
        assert_eq!(
            escape_html("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}
