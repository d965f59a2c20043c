//! Page data: which pages exist (pagemap, PAGEMAP_SCAN) and how they are written into a
//! new process (userfaultfd copy, process_vm_writev).
