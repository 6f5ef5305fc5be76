# The README's kernel.mb: a multiboot (v1, a.out kludge) kernel, entered in 32-bit
# protected mode with EAX = 0x2BADB002 and EBX = the multiboot information (Multiboot
# spec 3.2).  It prints the boot loader's magic and the command line (-append), then
# powers off through isa-debug-exit (exit status (0x11 << 1) | 1 = 35 when the device is
# there; without it the CPU halts).  Build it with `pyqemu images DIR` (DIR/kernel.mb).
#! mode: multiboot
#! include: lib/uart32.inc
#! exit: 0x11
#! serial: Hello from a multiboot kernel! magic=2BADB002\r\ncommand line: \r\n
entry:
    mov esp, 0x90000
    mov ebp, eax                # the boot loader's magic
    mov edi, ebx                # the multiboot information structure
    mov esi, msg
    call puts
    mov eax, ebp
    call puthex8
    mov esi, cmdline_msg
    call puts
    test dword ptr [edi], 0x4   # flags bit 2: cmdline is valid
    jz no_cmdline
    mov esi, dword ptr [edi + 0x10]
    call puts
no_cmdline:
    mov esi, crlf
    call puts
finish:
    mov al, 0x11
    out 0xf4, al                # isa-debug-exit,iobase=0xf4: exit status 35
    hlt
    jmp finish

msg:
    .ascii "Hello from a multiboot kernel! magic="
    .byte 0x00
cmdline_msg:
    .byte 0x0d, 0x0a
    .ascii "command line: "
    .byte 0x00
crlf:
    .byte 0x0d, 0x0a, 0x00
