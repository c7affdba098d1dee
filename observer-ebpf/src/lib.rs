// This file exists to enable the library target, so observer's build.rs can depend on this
// crate and be rebuilt when it changes (the programs themselves are in main.rs).
#![no_std]
