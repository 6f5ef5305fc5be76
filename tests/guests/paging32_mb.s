# 32-bit paging without long mode (Intel SDM vol. 3A, 4.3): a multiboot kernel builds a
# page directory with a 4 MiB page (CR4.PSE) for 0..4 MiB and page tables of 4 KiB pages
# for 4..8 MiB (identity) and for 0xC00000 (an alias of the physical page 0x403000),
# installs an IDT of 32-bit interrupt gates and turns CR0.PG on.  It writes through the
# alias and reads the value back through the identity map, reads and writes pages and
# prints the accessed/dirty bits the walks left (4.8), takes #PF on a write to a
# not-present page (error code W, 4.7; the handler checks CR2, maps the page, and the
# write completes), #PF on a supervisor write to a read-only page with CR0.WP=1 (4.6,
# error code P|W, the handler makes it writable), #PF on an instruction fetch from a
# not-present page with EFER.NXE=1 (error code 0: the I/D bit needs PAE or SMEP, 4.7),
# and INT 0x80 through a DPL 0 interrupt gate.  Each event logs (vector, error code,
# CR2, EFLAGS on entry to the handler: IF/TF cleared by the interrupt gate, 6.12.1.3).
# This host's KVM (PVM) refuses CR0.PG without long mode, so the second reference is
# Unicorn (tests/unicorn_ref.py, test_interp_matches_unicorn).
#! mode: multiboot
#! include: lib/uart32.inc
#! include: lib/flat32.inc
#! include: lib/pf32.inc
#! exit: 0x2c
#! kvm: legacy 32-bit paging
#! reference: unicorn
#! serial: v=0E e=00000002 cr2=00405000 fl=00000086\r\nv=0E e=00000003 cr2=00407000 fl=00000086\r\nv=0E e=00000000 cr2=00406000 fl=00000006\r\nv=80 e=00000000 cr2=00406000 fl=00000006\r\nalias=12345678 pf=0000CAFE wp=0000BEEF \r\npde=000000E3 00011023 00012023 \r\npte=00401023 00402063 00403023 00404003 00405063 00000000 00407063 00403063 \r\n
    .code32
entry:
    mov esp, 0x90000
    call flat32_load                         # lib/flat32.inc: our GDT, flat segments
    # 0x10000 page directory, 0x11000 page table (4..8 MiB), 0x12000 page table
    # (12..16 MiB), 0x14000 IDT, 0x20000 the event log: zero them.
    mov edi, 0x10000
    mov ecx, 0x1800
    xor eax, eax
    cld
    rep stosd
    mov edi, 0x20000
    mov ecx, 0x100
    rep stosd
    mov dword ptr [0x10000], 0x83            # PDE 0: 4 MiB page at 0, P|RW|PS
    mov dword ptr [0x10004], 0x11003         # PDE 1: page table, P|RW
    mov dword ptr [0x1000c], 0x12003         # PDE 3: page table, P|RW
    mov edi, 0x11000
    xor ecx, ecx
pt_loop:
    mov eax, ecx
    shl eax, 0xc
    add eax, 0x400003
    mov dword ptr [edi + ecx*4], eax
    inc ecx
    cmp ecx, 0x400
    jb pt_loop
    mov dword ptr [0x11014], 0               # 0x405000: not present
    mov dword ptr [0x11018], 0               # 0x406000: not present (a fetch)
    mov dword ptr [0x1101c], 0x407001        # 0x407000: read-only
    mov dword ptr [0x12000], 0x403003        # 0xC00000 -> physical 0x403000
    mov edi, 0xe
    mov esi, isr_pf
    call set_gate
    mov edi, 0xd
    mov esi, isr_gp
    call set_gate
    mov edi, 0x80
    mov esi, isr_80
    call set_gate
    .byte 0x0f, 0x01, 0x1d                   # lidt [idtr]
    .long idtr
    mov eax, cr4
    or eax, 0x10                             # CR4.PSE
    mov cr4, eax
    mov eax, 0x10000
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000                       # CR0.PG: 32-bit paging
    mov cr0, eax
    cmp eax, 0x0                             # AF defined (OR leaves it undefined): the
                                             # #PF frames and the log take these flags

    mov dword ptr [0xc00000], 0x12345678     # through the alias
    mov eax, dword ptr [0x403000]            # back through the identity map
    mov dword ptr [r_alias], eax
    mov eax, dword ptr [0x401000]            # read: A
    mov dword ptr [0x402000], eax            # write: A and D

    mov dword ptr [fix_addr], 0x405000
    mov dword ptr [fix_pte], 0x11014
    mov dword ptr [fix_val], 0x405003
    mov dword ptr [0x405000], 0xcafe         # #PF (not present, write), then done
    mov eax, dword ptr [0x405000]
    mov dword ptr [r_pf], eax

    mov eax, cr0
    or eax, 0x10000                          # CR0.WP
    mov cr0, eax
    cmp eax, 0x0                             # AF defined, as above
    mov dword ptr [fix_addr], 0x407000
    mov dword ptr [fix_pte], 0x1101c
    mov dword ptr [fix_val], 0x407003
    mov dword ptr [0x407000], 0xbeef         # #PF (protection, write), then done
    mov eax, dword ptr [0x407000]
    mov dword ptr [r_wp], eax

    # EFER.NXE if CPUID says NX (SDM 3A 4.1.1, Table 4-1): legal without PAE, unused by
    # 32-bit paging; a fetch from a not-present page still reports I/D=0 (4.7).
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb no_nx
    mov eax, 0x80000001
    cpuid
    test edx, 0x100000
    jz no_nx
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x800
    wrmsr
no_nx:
    cmp eax, 0x0                             # AF defined (TEST/OR leave it undefined)
    mov dword ptr [fix_addr], 0
    mov eax, after_fetch
    mov dword ptr [resume], eax
    mov eax, 0x406000
    jmp eax                                  # #PF (not present, fetch): resumes below
after_fetch:
    int 0x80

    call print_log
    mov esi, s_alias
    mov eax, dword ptr [r_alias]
    call putkv
    mov esi, s_pf
    mov eax, dword ptr [r_pf]
    call putkv
    mov esi, s_wp
    mov eax, dword ptr [r_wp]
    call putkv
    mov esi, crlf
    call puts
    mov esi, s_pde
    mov eax, dword ptr [0x10000]
    call putkv
    mov esi, s_none
    mov eax, dword ptr [0x10004]
    call putkv
    mov esi, s_none
    mov eax, dword ptr [0x1000c]
    call putkv
    mov esi, crlf
    call puts
    mov esi, s_pte
    mov ebx, 0x11004
pte_loop:
    mov eax, dword ptr [ebx]
    call putkv
    mov esi, s_none
    add ebx, 0x4
    cmp ebx, 0x11020
    jb pte_loop
    mov esi, s_none
    mov eax, dword ptr [0x12000]
    call putkv
    mov esi, crlf
    call puts
    cmp al, 0x0                              # AF defined (TEST leaves it undefined) at the end
    mov al, 0x2c
    out 0xf4, al
    hlt

r_alias:
    .long 0
r_pf:
    .long 0
r_wp:
    .long 0
