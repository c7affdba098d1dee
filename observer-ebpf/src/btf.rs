//! Reading kernel struct fields through BTF pointers, at offsets the agent resolves from the
//! running kernel's BTF (Rust eBPF has no CO-RE).

/// The field of type `T` at offset `*off` (a global the loader initialised) from `base`, a BTF
/// pointer (a tp_btf argument, a helper's BTF result, or a pointer field loaded through one).
/// The offset is a constant to the verifier (frozen `.rodata`), so this is a plain load it
/// checks against the kernel's BTF, not a bpf_probe_read_kernel call; a pointer field loads as
/// another BTF pointer, and a NULL one on the way reads as 0. `T` must be the field's width:
/// the verifier accepts no other access.
#[inline(always)]
pub fn field<T: Copy>(base: u64, off: &u32) -> T {
    // SAFETY: BTF-checked loads (see above); volatile so the offset is not folded and the
    // field is read as one load of its own width.
    unsafe {
        let off = core::ptr::read_volatile(off) as u64;
        core::ptr::read_volatile((base + off) as *const T)
    }
}
