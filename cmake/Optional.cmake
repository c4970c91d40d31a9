# Optional parts of the build. Each LUNET_<PART> is AUTO, ON or OFF:
# AUTO builds the part when its dependencies are found, ON fails without
# them, OFF skips it. Each sets LUNET_HAVE_<PART> and a one-line summary.

function(lunet_resolve part found why)
  set(mode ${LUNET_${part}})
  if(mode STREQUAL "OFF")
    set(LUNET_HAVE_${part} OFF PARENT_SCOPE)
    set(LUNET_${part}_SUMMARY "disabled (LUNET_${part}=OFF)" PARENT_SCOPE)
  elseif(found)
    set(LUNET_HAVE_${part} ON PARENT_SCOPE)
    set(LUNET_${part}_SUMMARY "enabled (${why})" PARENT_SCOPE)
  elseif(mode STREQUAL "ON")
    message(FATAL_ERROR "LUNET_${part}=ON but ${why}")
  else()
    set(LUNET_HAVE_${part} OFF PARENT_SCOPE)
    set(LUNET_${part}_SUMMARY "not built (${why})" PARENT_SCOPE)
  endif()
endfunction()

macro(lunet_find_cuda)
  set(_found OFF)
  set(_why "no CUDA toolkit found")
  if(NOT LUNET_CUDA STREQUAL "OFF")
    include(CheckLanguage)
    check_language(CUDA)
    find_package(CUDAToolkit QUIET)
    if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
      # Before enable_language, which would otherwise pick nvcc's default
      # (sm_75 for CUDA 13). A user's -DCMAKE_CUDA_ARCHITECTURES or
      # CUDAARCHS wins; PTX for 90 lets newer GPUs JIT.
      if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
        set(CMAKE_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures")
      endif()
      enable_language(CUDA)
      set(_found ON)
      set(_why "CUDA ${CUDAToolkit_VERSION}, archs ${CMAKE_CUDA_ARCHITECTURES}")
    endif()
  endif()
  lunet_resolve(CUDA ${_found} "${_why}")
endmacro()

macro(lunet_find_mpi)
  set(_found OFF)
  set(_why "no MPI found")
  if(NOT LUNET_MPI STREQUAL "OFF")
    find_package(MPI QUIET COMPONENTS C)
    if(MPI_C_FOUND)
      set(_found ON)
      set(_why "MPI ${MPI_C_VERSION}")
    endif()
  endif()
  lunet_resolve(MPI ${_found} "${_why}")
endmacro()

# NCCL (the engine for CUDA tensors in lunet.dist) comes with the CUDA
# toolkit here; NCCL_HOME points elsewhere. 2.13 is the oldest with
# ncclGetLastError (ncclAvg and bfloat16 came in 2.10).
macro(lunet_find_nccl)
  set(_found OFF)
  set(_why "no CUDA backend")
  if(NOT LUNET_NCCL STREQUAL "OFF" AND LUNET_HAVE_CUDA)
    set(_why "no nccl.h and libnccl found")
    find_path(NCCL_INCLUDE_DIR nccl.h
              HINTS $ENV{NCCL_HOME}/include ${CUDAToolkit_INCLUDE_DIRS})
    find_library(NCCL_LIBRARY nccl
                 HINTS $ENV{NCCL_HOME}/lib $ENV{NCCL_HOME}/lib64 ${CUDAToolkit_LIBRARY_DIR})
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      file(STRINGS ${NCCL_INCLUDE_DIR}/nccl.h _nccl_defs
           REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
      string(REGEX REPLACE ".*NCCL_MAJOR +([0-9]+).*NCCL_MINOR +([0-9]+).*NCCL_PATCH +([0-9]+).*"
             "\\1.\\2.\\3" _nccl_version "${_nccl_defs}")
      if(_nccl_version VERSION_LESS 2.13)
        set(_why "NCCL ${_nccl_version} is older than 2.13")
      else()
        set(_found ON)
        set(_why "NCCL ${_nccl_version}")
      endif()
    endif()
  endif()
  lunet_resolve(NCCL ${_found} "${_why}")
endmacro()

# cuDNN (the alternative BatchNorm path, lunet.backends.cudnn) comes with
# the CUDA toolkit here; CUDNN_HOME points elsewhere. Version 9 or newer.
macro(lunet_find_cudnn)
  set(_found OFF)
  set(_why "no CUDA backend")
  if(NOT LUNET_CUDNN STREQUAL "OFF" AND LUNET_HAVE_CUDA)
    set(_why "no cudnn.h and libcudnn found")
    find_path(CUDNN_INCLUDE_DIR cudnn_version.h
              HINTS $ENV{CUDNN_HOME}/include ${CUDAToolkit_INCLUDE_DIRS})
    find_library(CUDNN_LIBRARY cudnn
                 HINTS $ENV{CUDNN_HOME}/lib $ENV{CUDNN_HOME}/lib64 ${CUDAToolkit_LIBRARY_DIR})
    if(CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY)
      file(STRINGS ${CUDNN_INCLUDE_DIR}/cudnn_version.h _cudnn_defs
           REGEX "^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) +[0-9]+")
      string(REGEX REPLACE ".*CUDNN_MAJOR +([0-9]+).*CUDNN_MINOR +([0-9]+).*CUDNN_PATCHLEVEL +([0-9]+).*"
             "\\1.\\2.\\3" _cudnn_version "${_cudnn_defs}")
      if(_cudnn_version VERSION_LESS 9.0)
        set(_why "cuDNN ${_cudnn_version} is older than 9")
      else()
        set(_found ON)
        set(_why "cuDNN ${_cudnn_version}")
      endif()
    endif()
  endif()
  lunet_resolve(CUDNN ${_found} "${_why}")
endmacro()
