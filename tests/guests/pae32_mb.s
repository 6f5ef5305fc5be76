# PAE paging without long mode (Intel SDM vol. 3A, 4.4): a multiboot kernel builds four
# PDPTEs at CR3 (only P set: bits 2:1 and 8:5 of a PAE PDPTE are reserved, Table 4-8, and
# the processor sets no accessed bit there), a page directory with 2 MiB pages for
# 0..4 MiB, page tables of 4 KiB pages for 4..6 MiB (identity) and for 0xC00000 (an alias
# of the physical page 0x403000), and an IDT of 32-bit interrupt gates, sets CR4.PAE,
# EFER.NXE (allowed without long mode when CPUID.80000001H:EDX.NX=1: 4.1.1, Table 4-1)
# and CR0.PG.  As paging32_mb.s: a write through the alias read back through the
# identity map, accessed/dirty bits (4.8), #PF on a write to a not-present page (error
# code W, 4.7), on a supervisor write to a read-only page with CR0.WP=1 (P|W), on a fetch
# from a not-present page (I/D: PAE with NXE, 4.7) and from an XD page (P|I/D, 4.6),
# and INT 0x80.  Each event logs (vector, error code, CR2, EFLAGS on entry).
# This host's KVM (PVM) refuses CR0.PG without long mode, so the second reference is
# Unicorn (tests/unicorn_ref.py, test_interp_matches_unicorn).
#! mode: multiboot
#! include: lib/uart32.inc
#! include: lib/flat32.inc
#! include: lib/pf32.inc
#! exit: 0x2d
#! kvm: PAE paging
#! reference: unicorn
#! serial: v=0E e=00000002 cr2=00405000 fl=00000086\r\nv=0E e=00000003 cr2=00407000 fl=00000086\r\nv=0E e=00000010 cr2=00406000 fl=00000086\r\nv=0E e=00000011 cr2=00408000 fl=00000086\r\nv=80 e=00000000 cr2=00408000 fl=00000086\r\nalias=12345678 pf=0000CAFE wp=0000BEEF xd=000000C3 \r\npdpte=00011001 pde=000000E3 00200083 00012023 00013023 \r\npte=00401023 00402063 00403023 00404003 00405063 00000000 00407063 00408023 80000000 00403063 \r\n
    .code32
entry:
    mov esp, 0x90000
    call flat32_load                         # lib/flat32.inc: our GDT, flat segments
    # 0x10000 PDPT, 0x11000 page directory, 0x12000 page table (4..6 MiB), 0x13000
    # page table (12..14 MiB), 0x14000 IDT, 0x20000 the event log: zero them.
    mov edi, 0x10000
    mov ecx, 0x1200
    xor eax, eax
    cld
    rep stosd
    mov edi, 0x20000
    mov ecx, 0x100
    rep stosd
    mov dword ptr [0x10000], 0x11001         # PDPTE 0: P only
    mov dword ptr [0x11000], 0x83            # PDE 0: 2 MiB page at 0, P|RW|PS
    mov dword ptr [0x11008], 0x200083        # PDE 1: 2 MiB page at 2 MiB
    mov dword ptr [0x11010], 0x12003         # PDE 2: page table, P|RW
    mov dword ptr [0x11030], 0x13003         # PDE 6: page table, P|RW
    mov edi, 0x12000
    xor ecx, ecx
pt_loop:
    mov eax, ecx
    shl eax, 0xc
    add eax, 0x400003
    mov dword ptr [edi + ecx*8], eax
    inc ecx
    cmp ecx, 0x200
    jb pt_loop
    mov dword ptr [0x12028], 0               # 0x405000: not present
    mov dword ptr [0x12030], 0               # 0x406000: not present (a fetch)
    mov dword ptr [0x12038], 0x407001        # 0x407000: read-only
    mov dword ptr [0x12044], 0x80000000      # 0x408000: XD
    mov byte ptr [0x408000], 0xc3            # (a RET it never runs)
    mov dword ptr [0x13000], 0x403003        # 0xC00000 -> physical 0x403000
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
    or eax, 0x800                            # EFER.NXE
    wrmsr
no_nx:
    mov eax, cr4
    or eax, 0x20                             # CR4.PAE
    mov cr4, eax
    mov eax, 0x10000
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000                       # CR0.PG: PAE paging
    mov cr0, eax
    cmp eax, 0x0                             # AF defined (OR leaves it undefined): the
                                             # #PF frames and the log take these flags

    mov dword ptr [0xc00000], 0x12345678     # through the alias
    mov eax, dword ptr [0x403000]            # back through the identity map
    mov dword ptr [r_alias], eax
    mov eax, dword ptr [0x401000]            # read: A
    mov dword ptr [0x402000], eax            # write: A and D

    mov dword ptr [fix_addr], 0x405000
    mov dword ptr [fix_pte], 0x12028
    mov dword ptr [fix_val], 0x405003
    mov dword ptr [0x405000], 0xcafe         # #PF (not present, write), then done
    mov eax, dword ptr [0x405000]
    mov dword ptr [r_pf], eax

    mov eax, cr0
    or eax, 0x10000                          # CR0.WP
    mov cr0, eax
    cmp eax, 0x0                             # AF defined, as above
    mov dword ptr [fix_addr], 0x407000
    mov dword ptr [fix_pte], 0x12038
    mov dword ptr [fix_val], 0x407003
    mov dword ptr [0x407000], 0xbeef         # #PF (protection, write), then done
    mov eax, dword ptr [0x407000]
    mov dword ptr [r_wp], eax

    mov dword ptr [fix_addr], 0
    mov eax, after_fetch
    mov dword ptr [resume], eax
    mov eax, 0x406000
    jmp eax                                  # #PF (not present, fetch): resumes below
after_fetch:
    mov eax, after_xd
    mov dword ptr [resume], eax
    mov eax, dword ptr [0x408000]            # reading an XD page is allowed
    mov dword ptr [r_xd], eax
    mov eax, 0x408000
    jmp eax                                  # #PF (XD, fetch): resumes below
after_xd:
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
    mov esi, s_xd
    mov eax, dword ptr [r_xd]
    call putkv
    mov esi, crlf
    call puts
    mov esi, s_pdpte
    mov eax, dword ptr [0x10000]
    call putkv
    mov esi, s_pde
    mov eax, dword ptr [0x11000]
    call putkv
    mov esi, s_none
    mov eax, dword ptr [0x11008]
    call putkv
    mov esi, s_none
    mov eax, dword ptr [0x11010]
    call putkv
    mov esi, s_none
    mov eax, dword ptr [0x11030]
    call putkv
    mov esi, crlf
    call puts
    mov esi, s_pte
    mov ebx, 0x12008
pte_loop:
    mov eax, dword ptr [ebx]
    call putkv
    mov esi, s_none
    add ebx, 0x8
    cmp ebx, 0x12048
    jb pte_loop
    mov esi, s_none
    mov eax, dword ptr [0x12044]
    call putkv
    mov esi, s_none
    mov eax, dword ptr [0x13000]
    call putkv
    mov esi, crlf
    call puts
    cmp al, 0x0                              # AF defined (TEST leaves it undefined) at the end
    mov al, 0x2d
    out 0xf4, al
    hlt

r_alias:
    .long 0
r_pf:
    .long 0
r_wp:
    .long 0
r_xd:
    .long 0
s_xd:
    .ascii "xd="
    .byte 0x00
s_pdpte:
    .ascii "pdpte="
    .byte 0x00
