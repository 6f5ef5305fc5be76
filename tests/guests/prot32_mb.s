# Protected-mode privilege, task and virtual-8086 machinery without paging: a multiboot
# kernel builds its GDT (ring-0/ring-3 code and data, two 32-bit TSSs, two DPL-3 call
# gates, a 16-byte data segment, a conforming code segment) and an IDT (#SS and #GP
# handlers that print vector, error code and EIP and exit with 0x7f: any fault fails).
# * IRET to CPL 3 (Intel SDM vol. 2A IRET, return to an outer privilege level): DS..GS
#   held DPL-0 data, so they arrive null ("r3 ... ds=0").
# * Call gate with two parameters (SDM 3A 5.8.3-5.8.6): CPL 3 pushes 0x11111111 and
#   0x22222222 and calls gate 0x3B; the procedure runs at CPL 0 on SS0:ESP0 of TSS 0
#   (ESP = 0x80000 - 24: old SS, old ESP, both parameters copied, CS, EIP) and logs
#   them; it loads DS and GS with DPL-0 data and returns with RETF 8 (5.8.6, RET in
#   vol. 2B): ESP is back to 0x70000 (both stacks skip the parameters), DS and GS are
#   null, ES (DPL-3 data) and FS (conforming code, loaded at CPL 3) are kept.  A second
#   gate (no parameters) takes CPL 3 back to CPL 0 for good.
# * Task switches (SDM 3A 7.3, 7.4): CALL to TSS 1 (the task sees TR 0x30, NT=1, back
#   link 0x28, both busy), IRET with NT=1 back (TSS 1 free again, TSS 0 busy), JMP to
#   TSS 1 (resumes after its IRET: NT clear, TSS 0 free, the back link untouched) and
#   JMP back.  Both TSSs are 32-bit.
# * Limits (SDM 3A 5.3): LSL of a byte-granular 16-byte segment (0xF) and of a limit-0
#   page-granular one (0xFFF); a dword store at offset 0xC, the last one inside.
# * Virtual-8086 mode (SDM 3A 20.2): IRET with VM=1 and IOPL 0 to 0800:0000 (the code
#   is copied to 0x8000); real-mode addressing (0900:1010 and 0A00:0010 are one byte),
#   16-bit near and far CALL/RET; it prints through the I/O permission bitmap of TSS 0
#   (20.2.8.1, 19.5.2 in vol. 1: only 0xF4 and 0x3F8-0x3FF are allowed, IOPL 0 does
#   not matter) and exits through isa-debug-exit from VM86.
# Unicorn (QEMU's TCG core) is the second reference, and the guest stays where it can
# be one: tests/unicorn_ref.py delivers events only from CPL 0 and only with the #PF
# error code ("event-delivery"), and QEMU's TCG does not check data-segment limits or
# null data segments, so the guest takes no #GP/#SS (no access past the 16-byte limit)
# and leaves VM86 through isa-debug-exit, not INT n.  It also avoids Unicorn 2.1's
# known slips: no 16-bit TSS (the old task is saved in the new TSS's layout), no
# gate to a conforming segment (CS RPL left 0), no T flag, no PUSHF/PUSHFD in VM86
# (VM left set in the image), no not-present SS (#NP for #SS).  keystone's .code16
# emits 66-prefixed CALL/RET/RETF, so the VM86 transfers are .byte; it rejects
# PUSH of a label, so such values go through EAX.  After OUT 0xF4 the VM86 code spins
# (JMP $): HLT there is #GP(0).
# This host's KVM (PVM) stops on the IRETD to CPL 3 with an emulation failure (it runs
# CPL-3 code on its own GDT and emulates CPL-0 code), which tests/test_conformance.py
# skips with that reason; the '#! kvm:' line would turn a triple fault into one too.
# Unicorn confirms what it can: the same serial output, exit status and registers.
#! mode: multiboot
#! include: lib/uart32.inc
#! include: lib/flat32.inc
#! exit: 0x2e
#! kvm: CPL-3 code and task switches on the guest's own GDT
#! reference: unicorn
#! serial: r3 cs=0000001B ds=00000000 \r\ngate cpl=00000000 ss=00000010 esp=0007FFE8 p=11111111 22222222 ss:esp=00000023 0006FFF8 \r\nret cs=0000001B esp=00070000 ds=00000000 es=00000023 fs=00000053 gs=00000000 \r\nr0 cs=00000008 esp=0007FFF0 \r\nbusy=B9\r\ntask tr=00000030 fl=00004002 link=00000028 busy=BB\r\nback tr=00000028 fl=00003002 link=00000028 busy=B9\r\ntask tr=00000030 fl=00000002 link=00000028 busy=9B\r\nback tr=00000028 fl=00003002 link=00000028 busy=B9\r\nlsl=0000000F 00000FFF es:c=ABCD1234 \r\nv86 sp=1000 cs=0800 es:10=5A5A far cs=0800 \r\n
    .code32
entry:
    mov esp, 0x90000
    call flat32_load                         # lib/flat32.inc: our GDT, flat segments
    # 0x12000 TSS 0 (+0x68 its I/O bitmap), 0x12200 TSS 1, 0x14000 the IDT: zero them.
    cld
    mov edi, 0x12000
    mov ecx, 0xa00
    xor eax, eax
    rep stosd
    # Call gates (SDM 3A 5.8.3): 0x38 to gate_proc with 2 dword parameters, 0x48 to
    # ring0_back with none; both DPL 3, type 0xC (32-bit call gate).
    mov esi, gate_proc
    mov edi, gdt + 0x38
    mov edx, 0xec02
    call make_gate
    mov esi, ring0_back
    mov edi, gdt + 0x48
    mov edx, 0xec00
    call make_gate
    # IDT: #SS and #GP through 32-bit interrupt gates (SDM 3A 6.11).
    mov esi, isr_ss
    mov edi, 0x14060
    mov edx, 0x8e00
    call make_gate
    mov esi, isr_gp
    mov edi, 0x14068
    mov edx, 0x8e00
    call make_gate
    .byte 0x0f, 0x01, 0x1d                   # lidt [idtr]
    .long idtr
    # TSS 0 (SDM 3A 7.2.1): SS0:ESP0 = 0x10:0x80000, I/O map base 0x68; the bitmap
    # denies every port but 0xF4 and 0x3F8-0x3FF (used in virtual-8086 mode, 20.2.8.1).
    mov dword ptr [0x12004], 0x80000
    mov dword ptr [0x12008], 0x10
    mov word ptr [0x12066], 0x68
    mov edi, 0x12068
    mov ecx, 0x81
    mov al, 0xff
    rep stosb
    mov byte ptr [0x12068 + 0x1e], 0xef      # port 0xF4
    mov byte ptr [0x12068 + 0x7f], 0x00      # ports 0x3F8-0x3FF
    # TSS 1: the second task (CPL 0, its own stack).
    mov dword ptr [0x12220], task_entry      # EIP
    mov dword ptr [0x12224], 0x2             # EFLAGS
    mov dword ptr [0x12238], 0x60000         # ESP
    mov dword ptr [0x12248], 0x10            # ES
    mov dword ptr [0x1224c], 0x08            # CS
    mov dword ptr [0x12250], 0x10            # SS
    mov dword ptr [0x12254], 0x10            # DS
    mov word ptr [0x12266], 0x68             # I/O map base = the limit + 1: no bitmap
    mov ax, 0x28
    ltr ax

    # -- to CPL 3 by IRET (SDM 3A 6.12.1 / IRET): DS..GS of DPL 0 become null -------
    push 0x23
    push 0x70000
    push 0x3002                              # IOPL 3: ring 3 prints on the UART
    push 0x1b
    mov eax, ring3_entry
    push eax
    iretd
ring3_entry:
    mov ebx, ds
    mov ax, 0x23
    mov ds, ax
    mov esi, s_r3
    mov eax, cs
    call putkv
    mov esi, s_ds
    mov eax, ebx
    call putkv
    mov esi, crlf
    call puts
    mov ax, 0x23
    mov es, ax
    mov ax, 0x53                             # conforming code, DPL 0: loadable at CPL 3
    mov fs, ax
    push 0x22222222
    push 0x11111111
    .byte 0x9a                               # call far 0x3b:0 (the gate; offset ignored)
    .long 0
    .word 0x3b
    mov ebx, esp
    mov ebp, ds                              # read the selectors before DS is reloaded
    mov edi, gs
    mov ax, 0x23
    mov ds, ax
    mov esi, s_ret
    mov eax, cs
    call putkv
    mov esi, s_esp
    mov eax, ebx
    call putkv
    mov esi, s_ds
    mov eax, ebp
    call putkv
    mov esi, s_es
    mov eax, es
    call putkv
    mov esi, s_fs
    mov eax, fs
    call putkv
    mov esi, s_gs
    mov eax, edi
    call putkv
    mov esi, crlf
    call puts
    .byte 0x9a                               # call far 0x4b:0: up to CPL 0 for good
    .long 0
    .word 0x4b

# The call gate's procedure (SDM 3A 5.8.5, 5.8.6): CPL 0 on SS0:ESP0 with the two
# parameters copied; it loads DS and GS with DPL-0 data, which RETF nulls.
gate_proc:
    mov ebx, esp
    mov esi, s_gate
    mov eax, cs
    and eax, 0x3
    call putkv
    mov esi, s_ss
    mov eax, ss
    call putkv
    mov esi, s_esp
    mov eax, ebx
    call putkv
    mov esi, s_p
    mov eax, dword ptr [ebx + 0x8]
    call putkv
    mov esi, s_none
    mov eax, dword ptr [ebx + 0xc]
    call putkv
    mov esi, s_old
    mov eax, dword ptr [ebx + 0x14]
    call putkv
    mov esi, s_none
    mov eax, dword ptr [ebx + 0x10]
    call putkv
    mov esi, crlf
    call puts
    mov ax, 0x10
    mov ds, ax
    mov gs, ax
    retf 0x8

ring0_back:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov esi, s_r0
    mov eax, cs
    call putkv
    mov esi, s_esp
    mov eax, esp
    call putkv
    mov esi, crlf
    call puts
    mov esp, 0x90000

    # -- task switches (SDM 3A 7.3): CALL to TSS 1, IRET back (NT), JMP there and back
    mov esi, s_busy
    call put_busy
    cmp esp, 0x0                             # AF defined (TEST leaves it undefined): each
                                             # task switch saves EFLAGS in the old TSS
    .byte 0x9a                               # call far 0x30:0 (a TSS: task switch)
    .long 0
    .word 0x30
    mov esi, s_back
    call put_task
    cmp esp, 0x0                             # AF defined: EFLAGS goes into TSS 0
    .byte 0xea                               # jmp far 0x30:0
    .long 0
    .word 0x30
    mov esi, s_back
    call put_task

    # -- limits (SDM 3A 5.3): LSL, and the last dword inside a 16-byte segment ----
    mov eax, 0x40
    lsl ebx, eax
    mov esi, s_lsl
    mov eax, ebx
    call putkv
    mov eax, 0x58
    lsl ebx, eax
    mov esi, s_none
    mov eax, ebx
    call putkv
    mov ax, 0x40
    mov es, ax
    mov dword ptr es:[0xc], 0xabcd1234
    mov ax, 0x10
    mov es, ax
    mov esi, s_lim
    mov eax, dword ptr [0x3000c]
    call putkv
    mov esi, crlf
    call puts

    # -- virtual-8086 mode (SDM 3A 20.2): IRET with VM=1, IOPL 0 -------------------
    mov esi, v86_code
    mov edi, 0x8000
    mov ecx, v86_end - v86_code
    rep movsb
    push 0                                   # GS
    push 0                                   # FS
    push 0x900                               # DS
    push 0xa00                               # ES
    push 0x700                               # SS
    push 0x1000                              # ESP
    push 0x20002                             # EFLAGS: VM
    push 0x800                               # CS
    push 0                                   # EIP
    iretd

task_entry:
    mov esi, s_task
    call put_task
    cmp esp, 0x0                             # AF defined: EFLAGS goes into TSS 1
    iretd                                    # NT=1: back to the caller's task
    mov esi, s_task
    call put_task
    cmp esp, 0x0                             # AF defined: EFLAGS goes into TSS 1
    .byte 0xea                               # jmp far 0x28:0
    .long 0
    .word 0x28

# put_task: the string at ESI, then TR, EFLAGS, TSS 1's back link and the busy bits.
put_task:
    call puts
    mov esi, s_tr
    str eax
    and eax, 0xffff
    call putkv
    mov esi, s_fl
    pushfd
    pop eax
    and eax, 0xfffff72a                      # NT, IOPL and the rest, not the status flags
    call putkv                               # (the UART loop's: AF undefined after TEST)
    mov esi, s_link
    movzx eax, word ptr [0x12200]
    call putkv
    mov esi, s_busy
# put_busy: the string at ESI, then the type fields of the TSS descriptors 0x28 and 0x30.
put_busy:
    call puts
    movzx eax, byte ptr [gdt + 0x2d]
    and eax, 0xf
    mov ecx, 0x1
    call puthexn
    movzx eax, byte ptr [gdt + 0x35]
    and eax, 0xf
    call puthexn
    mov esi, crlf
    jmp puts

# make_gate: the gate descriptor at EDI: selector 0x08, offset ESI, EDX = bits 0-15 of
# its high dword (P, DPL, type, parameter count).
make_gate:
    mov eax, esi
    and eax, 0xffff
    or eax, 0x80000
    mov dword ptr [edi], eax
    mov eax, esi
    and eax, 0xffff0000
    or eax, edx
    mov dword ptr [edi + 0x4], eax
    ret

isr_ss:
    push 0xc
    jmp isr_fault
isr_gp:
    push 0xd
isr_fault:
    mov ax, 0x10
    mov ds, ax
    mov esi, s_v
    pop eax
    call putkv
    mov esi, s_e
    pop eax
    call putkv
    mov esi, s_eip
    pop eax
    call putkv
    mov esi, crlf
    call puts
    mov al, 0x7f
    out 0xf4, al
    hlt

# The virtual-8086 task: copied to 0x8000 (CS 0x0800, IP 0).  Real-mode addressing
# (DS 0x0900 + 0x1010 and ES 0x0A00 + 0x0010 are one byte), a near call, a far RET,
# then output through the TSS I/O bitmap (IOPL 0) and isa-debug-exit.
v86_code:
    .code16
    mov bx, sp
    mov si, v86_s_sp - v86_code
    .byte 0xe8                               # call v86_put (rel16)
    .word v86_put - v86_r1
v86_r1:
    mov bx, cs
    mov si, v86_s_cs - v86_code
    .byte 0xe8                               # call v86_put (rel16)
    .word v86_put - v86_r2
v86_r2:
    mov word ptr [0x1010], 0x5a5a
    mov bx, word ptr es:[0x10]
    mov si, v86_s_es - v86_code
    .byte 0xe8                               # call v86_put (rel16)
    .word v86_put - v86_r3
v86_r3:
    .byte 0x9a                               # call far 0x0800:v86_farproc (16-bit)
    .word v86_farproc - v86_code
    .word 0x800
    mov si, v86_s_far - v86_code
    .byte 0xe8                               # call v86_put (rel16)
    .word v86_put - v86_rF
v86_rF:
    mov si, v86_s_crlf - v86_code
    .byte 0xe8                               # call v86_puts (rel16)
    .word v86_puts - v86_r5
v86_r5:
    cmp al, 0x0                              # AF defined (TEST leaves it undefined) at the end
    mov al, 0x2e
    out 0xf4, al
    .byte 0xeb, 0xfe                         # jmp $ (HLT would be #GP(0) in VM86)
# v86_farproc: BX = the CS the far CALL pushed, DI = its IP.
v86_farproc:
    mov bp, sp
    mov bx, word ptr [bp + 0x2]
    mov di, word ptr [bp]
    .byte 0xcb                               # retf (16-bit)
# v86_put: the string at CS:SI, then BX as 4 hex digits and a space.
v86_put:
    .byte 0xe8                               # call v86_puts (rel16)
    .word v86_puts - v86_r6
v86_r6:
    mov cx, 0x4
v86_hex:
    rol bx, 0x4
    mov al, bl
    and al, 0xf
    cmp al, 0x9
    jbe v86_digit
    add al, 0x7
v86_digit:
    add al, 0x30
    .byte 0xe8                               # call v86_putc (rel16)
    .word v86_putc - v86_r7
v86_r7:
    loop v86_hex
    mov al, 0x20
    jmp v86_putc
v86_puts:
    mov al, byte ptr cs:[si]
    inc si
    test al, al
    jz v86_puts_done
    .byte 0xe8                               # call v86_putc (rel16)
    .word v86_putc - v86_r8
v86_r8:
    jmp v86_puts
v86_puts_done:
    .byte 0xc3                               # ret (16-bit)
v86_putc:
    push ax
    mov dx, 0x3fd
v86_wait:
    in al, dx
    test al, 0x20
    jz v86_wait
    pop ax
    mov dx, 0x3f8
    out dx, al
    .byte 0xc3                               # ret (16-bit)
v86_s_sp:
    .ascii "v86 sp="
    .byte 0x00
v86_s_cs:
    .ascii "cs="
    .byte 0x00
v86_s_es:
    .ascii "es:10="
    .byte 0x00
v86_s_far:
    .ascii "far cs="
    .byte 0x00
v86_s_crlf:
    .byte 0x0d, 0x0a, 0x00
v86_end:
    .code32

    .align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                 # 0x08 code, DPL 0
    .quad 0x00cf92000000ffff                 # 0x10 data, DPL 0
    .quad 0x00cffa000000ffff                 # 0x18 code, DPL 3
    .quad 0x00cff2000000ffff                 # 0x20 data, DPL 3
    .quad 0x00008901200000e8                 # 0x28 TSS 0: 0x12000, limit 0xE8 (bitmap)
    .quad 0x0000890122000067                 # 0x30 TSS 1: 0x12200, limit 0x67
    .quad 0                                  # 0x38 call gate (built at run time)
    .quad 0x004092030000000f                 # 0x40 data, base 0x30000, limit 0xF
    .quad 0                                  # 0x48 call gate (built at run time)
    .quad 0x00cf9e000000ffff                 # 0x50 conforming readable code, DPL 0
    .quad 0x00c0920000000000                 # 0x58 data, limit 0 with G=1: 0xFFF
gdtr:
    .word 0x5f
    .long gdt
    .align 4
idtr:
    .word 0x7ff
    .long 0x14000
s_r3:
    .ascii "r3 cs="
    .byte 0x00
s_r0:
    .ascii "r0 cs="
    .byte 0x00
s_ret:
    .ascii "ret cs="
    .byte 0x00
s_gate:
    .ascii "gate cpl="
    .byte 0x00
s_ds:
    .ascii "ds="
    .byte 0x00
s_es:
    .ascii "es="
    .byte 0x00
s_fs:
    .ascii "fs="
    .byte 0x00
s_gs:
    .ascii "gs="
    .byte 0x00
s_ss:
    .ascii "ss="
    .byte 0x00
s_esp:
    .ascii "esp="
    .byte 0x00
s_p:
    .ascii "p="
    .byte 0x00
s_old:
    .ascii "ss:esp="
    .byte 0x00
s_task:
    .ascii "task "
    .byte 0x00
s_back:
    .ascii "back "
    .byte 0x00
s_tr:
    .ascii "tr="
    .byte 0x00
s_fl:
    .ascii "fl="
    .byte 0x00
s_link:
    .ascii "link="
    .byte 0x00
s_busy:
    .ascii "busy="
    .byte 0x00
s_lsl:
    .ascii "lsl="
    .byte 0x00
s_lim:
    .ascii "es:c="
    .byte 0x00
s_v:
    .ascii "#v="
    .byte 0x00
s_e:
    .ascii "e="
    .byte 0x00
s_eip:
    .ascii "eip="
    .byte 0x00
s_none:
    .byte 0x00
crlf:
    .byte 0x0d, 0x0a, 0x00
