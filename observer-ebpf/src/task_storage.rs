//! A BTF definition of `BPF_MAP_TYPE_TASK_STORAGE`, which aya-ebpf does not provide.
//!
//! Per-task state (when a task was enqueued, which lock it waits on) lives in the task itself:
//! measured here at about half the per-event cost of a hash map keyed by task pointer, and it
//! is freed by the kernel when the task exits, so it cannot leak or fill up.

use core::ptr;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type, task_struct},
    helpers::generated::bpf_task_storage_get,
};

/// Field names and the pointer-to-array encoding are what loaders read from BTF (as in
/// aya-ebpf's btf_map_def!); max_entries must be 0 for local storage maps.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders patched by the loader and never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[expect(
        clippy::mut_from_ref,
        reason = "the value lives in the task, not in this placeholder definition"
    )]
    #[inline(always)]
    fn get(&self, task: *mut task_struct, flags: u64) -> Option<&mut T> {
        let map = ptr::from_ref(self).cast_mut().cast();
        // SAFETY: `task` is a BTF task pointer (a tracepoint argument or
        // bpf_get_current_task_btf), which the verifier checks; the returned value lives as
        // long as the task and is only used within this program run.
        unsafe {
            bpf_task_storage_get(map, task, ptr::null_mut(), flags)
                .cast::<T>()
                .as_mut()
        }
    }

    /// The task's value, created zeroed if it has none.
    #[inline(always)]
    pub fn get_or_create(&self, task: *mut task_struct) -> Option<&mut T> {
        self.get(task, BPF_LOCAL_STORAGE_GET_F_CREATE.into())
    }

    /// The task's value if it has one.
    #[inline(always)]
    pub fn get_existing(&self, task: *mut task_struct) -> Option<&mut T> {
        self.get(task, 0)
    }
}
