fn main() -> std::process::ExitCode {
    ipfs_mount::cli::main()
}
