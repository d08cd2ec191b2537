fn main() -> std::process::ExitCode {
    ipfs_mount::cmd::main()
}
