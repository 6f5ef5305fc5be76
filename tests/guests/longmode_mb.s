# A multiboot kernel that switches itself to long mode (Intel SDM vol. 3A, 10.8.5
# "Initializing IA-32e Mode"): from the 32-bit multiboot entry it loads its own GDT,
# builds 4-level identity page tables (2 MiB pages for 0..4 MiB), sets CR4.PAE,
# CR3, EFER.LME (WRMSR), then CR0.PG, which activates IA-32e mode (EFER.LMA), and
# far-returns into a 64-bit code segment.  There it prints EFER, CR0 and CR4 and
# the accessed/dirty bits the page walks left in the page tables (SDM 4.8).
#! mode: multiboot
#! exit: 0x2a
#! serial: 32-bit entry\r\nlong mode: efer=0000000000000500 cr0=0000000080000011 cr4=0000000000000020\r\npml4e=0000000000011023 pde0=00000000000000E3 pde1=0000000000200083\r\nsum=00000000DEADBEEF\r\n
    .code32
entry:
    mov esp, 0x90000
    mov esi, msg32
    call puts32
    # lgdt [gdtr] by hand: keystone puts a stray 0x66 on it in 32-bit mode.
    .byte 0x0f, 0x01, 0x15
    .long gdtr
    # Page tables at 0x10000 (PML4), 0x11000 (PDPT), 0x12000 (PD): zero them first.
    mov edi, 0x10000
    mov ecx, 0xc00
    xor eax, eax
    cld
    rep stosd
    mov dword ptr [0x10000], 0x11003         # PML4[0] -> PDPT, P|RW
    mov dword ptr [0x11000], 0x12003         # PDPT[0] -> PD, P|RW
    mov dword ptr [0x12000], 0x00000083      # PD[0]: 2 MiB page at 0, P|RW|PS
    mov dword ptr [0x12008], 0x00200083      # PD[1]: 2 MiB page at 2 MiB
    mov eax, cr4
    or eax, 0x20                             # CR4.PAE
    mov cr4, eax
    mov eax, 0x10000
    mov cr3, eax
    mov ecx, 0xc0000080                      # IA32_EFER
    rdmsr
    or eax, 0x100                            # LME
    wrmsr
    mov eax, cr0
    or eax, 0x80000000                       # PG: IA-32e mode becomes active
    mov cr0, eax
    mov eax, long_entry
    push 0x10                                # the 64-bit code segment
    push eax
    retf

# puts32: print the NUL-terminated string at ESI (32-bit code).
puts32:
    lodsb
    test al, al
    jz puts32_done
    mov dx, 0x3fd
puts32_wait:
    mov ah, al
    in al, dx
    test al, 0x20
    mov al, ah
    jz puts32_wait
    mov dx, 0x3f8
    out dx, al
    jmp puts32
puts32_done:
    ret

    .code64
long_entry:
    mov ax, 0x18
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, 0x90000
    mov esi, msg_long
    call puts
    mov ecx, 0xc0000080
    rdmsr
    shl rdx, 0x20
    or rax, rdx
    call puthex64
    mov esi, msg_cr0
    call puts
    mov rax, cr0
    call puthex64
    mov esi, msg_cr4
    call puts
    mov rax, cr4
    call puthex64
    mov esi, msg_pml4e
    call puts
    mov ebx, 0x10000
    mov rax, qword ptr [rbx]
    call puthex64
    mov esi, msg_pde0
    call puts
    mov ebx, 0x12000
    mov rax, qword ptr [rbx]
    call puthex64
    mov esi, msg_pde1
    call puts
    mov rax, qword ptr [rbx + 8]
    call puthex64
    # Some 64-bit arithmetic on the new registers, stored above 2 MiB (PD[1], no write yet
    # before this point, so the D bit appears only now).
    mov r8, 0xdead0000
    mov r9, 0xbeef
    lea r10, [r8 + r9]
    mov r11d, 0x200000
    mov qword ptr [r11], r10
    mov esi, msg_sum
    call puts
    mov rax, qword ptr [r11]
    call puthex64
    mov esi, crlf
    call puts
    cmp al, 0x0                              # AF defined (TEST leaves it undefined) at the end
    mov al, 0x2a
    out 0xf4, al
    hlt

# puts: print the NUL-terminated string at RSI.
puts:
    lodsb
    test al, al
    jz puts_done
    call putc
    jmp puts
puts_done:
    ret

# putc: print AL once the transmitter holding register is empty (LSR bit 5).
putc:
    push rdx
    push rax
    mov dx, 0x3fd
putc_wait:
    in al, dx
    test al, 0x20
    jz putc_wait
    pop rax
    mov dx, 0x3f8
    out dx, al
    pop rdx
    ret

# puthex64: print RAX as 16 upper-case hex digits.
puthex64:
    push rcx
    mov ecx, 0x10
puthex_loop:
    rol rax, 0x4
    push rax
    and al, 0xf
    cmp al, 0x9
    jbe puthex_digit
    add al, 0x7
puthex_digit:
    add al, 0x30
    call putc
    pop rax
    dec ecx
    jnz puthex_loop
    pop rcx
    ret

    .align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                 # 0x08 code32
    .quad 0x00af9a000000ffff                 # 0x10 code64
    .quad 0x00cf92000000ffff                 # 0x18 data
gdtr:
    .word 0x1f
    .long gdt
msg32:
    .ascii "32-bit entry"
    .byte 0x0d, 0x0a, 0x00
msg_long:
    .ascii "long mode: efer="
    .byte 0x00
msg_cr0:
    .ascii " cr0="
    .byte 0x00
msg_cr4:
    .ascii " cr4="
    .byte 0x00
msg_pml4e:
    .byte 0x0d, 0x0a
    .ascii "pml4e="
    .byte 0x00
msg_pde0:
    .ascii " pde0="
    .byte 0x00
msg_pde1:
    .ascii " pde1="
    .byte 0x00
msg_sum:
    .byte 0x0d, 0x0a
    .ascii "sum="
    .byte 0x00
crlf:
    .byte 0x0d, 0x0a, 0x00
