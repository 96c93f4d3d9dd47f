# Included at the top of every compiler folder (dialects/, passes/, frontends/,
# tools/loomc, tools/loom-opt). HandleLLVMOptions changes directory-scoped flags,
# so the runtime never sees LLVM's flags, include paths or -fno-exceptions.
include(HandleLLVMOptions)
include_directories(SYSTEM ${LLVM_INCLUDE_DIRS} ${MLIR_INCLUDE_DIRS})
include_directories(${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
