# The tight loop of loop.s in 32-bit protected mode (CPL 0) with paging turned on
# by the guest: one page table of 4 KiB pages identity-maps 0..4 MiB, the page
# directory's first entry points to it, then CR3 and CR0.PG.  Hosts whose KVM
# refuses legacy paging (PVM) take #GP on the mov to CR0: the runner skips them.
# Result: EBX, as in loop.s.
    mov edi, {PT}
    mov eax, 0x3
    mov ecx, 0x400
pt_fill:
    mov dword ptr [edi], eax
    add eax, 0x1000
    add edi, 0x4
    dec ecx
    jnz pt_fill
    mov edi, {PD}
    mov dword ptr [edi], {PDE}
    mov cr3, edi
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    jmp paged
paged:
    mov ecx, {N}
    xor eax, eax
    xor edx, edx
loop_top:
    add eax, ecx
    xor edx, eax
    dec ecx
    jnz loop_top
    mov ebx, edx
    mov al, 0x2a
    out 0xf4, al
