# Arithmetic and flags in 64-bit long mode (CPL 0, identity-mapped paging).
# Every pushed flag image holds only flags the SDM defines at that point: the ones an
# instruction leaves undefined are masked off the copy (and qword ptr [rsp], ...) or
# defined by a CMP first (accel/interp/undefined_flags.py lists them per instruction).
#! mode: long64
#! load: 0x10000
#! exit: 0x13
    mov rsp, 0x80000
    mov rax, 0x7fffffffffffffff
    add rax, 0x1
    pushfq
    mov rbx, -1
    add rbx, 0x1
    pushfq
    mov rcx, 0x123456789abcdef0
    mov rdx, 0x0fedcba987654321
    imul rcx, rdx
    pushfq
    and qword ptr [rsp], 0x801
    mov r8, 0xdeadbeefcafebabe
    mov rax, r8
    mov r9, 0x1000
    mul r9
    pushfq
    and qword ptr [rsp], 0x801
    mov r10, rax
    mov r11, rdx
    mov rax, 0x123456789
    cqo
    mov r12, 0x7
    idiv r12                    # CF, OF, SF, ZF, AF, PF undefined (SDM vol. 2A, IDIV)
    mov r13, rdx
    cmp r13, r12                # defines them again; ROR by 1 sets only CF and OF and
    mov r14, 0x8000000000000001
    ror r14, 0x1                # keeps the other four (SDM vol. 2B, RCL/RCR/ROL/ROR)
    pushfq
    shr r14, 0x3f
    pushfq
    and qword ptr [rsp], -0x811
    mov r15d, 0xffffffff        # a 32-bit write zero-extends
    movsxd rsi, r15d
    xchg rsi, rdi
    cmp rdi, r15
    setl al
    setb bl
    cmove rcx, rsi
    pushfq
    mov al, 0x13
    out 0xf4, al
    hlt
