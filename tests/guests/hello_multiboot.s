# Hello from a multiboot (v1, a.out kludge) kernel: entered in 32-bit protected mode
# with EAX = 0x2BADB002 and EBX = the multiboot information (Multiboot spec 3.2).
#! mode: multiboot
#! include: lib/uart32.inc
#! exit: 0x11
#! serial: Hello from multiboot!\r\nmagic=2BADB002 flags-ok\r\n
entry:
    mov esp, 0x90000
    mov ebp, eax            # the boot loader's magic
    mov edi, ebx            # the multiboot information structure
    mov esi, msg
    call puts
    mov esi, magic_msg
    call puts
    mov eax, ebp
    call puthex8
    mov eax, dword ptr [edi]        # info flags: mem_* (bit 0) must be valid
    test eax, 0x1
    jz bad_flags
    mov esi, flags_ok
    call puts
    jmp finish
bad_flags:
    mov esi, flags_bad
    call puts
finish:
    cmp al, 0x0                     # AF defined (TEST leaves it undefined) in the final state
    mov al, 0x11
    out 0xf4, al
    hlt

msg:
    .ascii "Hello from multiboot!"
    .byte 0x0d, 0x0a, 0x00
magic_msg:
    .ascii "magic="
    .byte 0x00
flags_ok:
    .ascii " flags-ok"
    .byte 0x0d, 0x0a, 0x00
flags_bad:
    .ascii " flags-bad"
    .byte 0x0d, 0x0a, 0x00
