# The CUDA architectures to build for when the user names none, by nvcc's version.
#
# SASS ("-real") for Turing (T4), Ampere, Ada and Hopper, plus Blackwell where the compiler knows
# it, and PTX only for the newest, so a later GPU still JIT-compiles the kernel at load. nvcc's own
# default (52 up to CUDA 12.x, 75 with CUDA 13) would give old SASS plus PTX JIT-compiled on every
# modern GPU; asking for sm_100/sm_120 before CUDA 12.8 stops nvcc ("Unsupported gpu architecture").
function(handssca_default_cuda_architectures nvcc_version out_var)
  if(nvcc_version VERSION_GREATER_EQUAL 12.8)
    set(archs 75-real 80-real 86-real 89-real 90-real 100-real 120)
  elseif(nvcc_version VERSION_GREATER_EQUAL 11.8)
    set(archs 75-real 80-real 86-real 89-real 90)
  elseif(nvcc_version VERSION_GREATER_EQUAL 11.1)
    set(archs 75-real 80-real 86)
  else()
    set(archs 75-real 80)
  endif()
  set(${out_var} "${archs}" PARENT_SCOPE)
endfunction()
