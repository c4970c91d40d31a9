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

# A library that comes with the CUDA toolkit here, or under $ENV{<PART>_HOME}:
# header `header` (whose <MACRO>_MAJOR, _MINOR and `patch` macros give the
# version), library `lib`, at least version `min`. Sets <PART>_INCLUDE_DIR,
# <PART>_LIBRARY and LUNET_HAVE_<PART> with its summary.
macro(lunet_find_toolkit_lib part name header lib macro patch min)
  set(_found OFF)
  set(_why "no CUDA backend")
  if(NOT LUNET_${part} STREQUAL "OFF" AND LUNET_HAVE_CUDA)
    set(_why "no ${header} and lib${lib} found")
    find_path(${part}_INCLUDE_DIR ${header}
              HINTS $ENV{${part}_HOME}/include ${CUDAToolkit_INCLUDE_DIRS})
    find_library(${part}_LIBRARY ${lib}
                 HINTS $ENV{${part}_HOME}/lib $ENV{${part}_HOME}/lib64 ${CUDAToolkit_LIBRARY_DIR})
    if(${part}_INCLUDE_DIR AND ${part}_LIBRARY)
      file(STRINGS ${${part}_INCLUDE_DIR}/${header} _defs
           REGEX "^#define ${macro}_(MAJOR|MINOR|${patch}) +[0-9]+")
      string(REGEX REPLACE ".*${macro}_MAJOR +([0-9]+).*${macro}_MINOR +([0-9]+).*${macro}_${patch} +([0-9]+).*"
             "\\1.\\2.\\3" _version "${_defs}")
      if(_version VERSION_LESS ${min})
        set(_why "${name} ${_version} is older than ${min}")
      else()
        set(_found ON)
        set(_why "${name} ${_version}")
      endif()
    endif()
  endif()
  lunet_resolve(${part} ${_found} "${_why}")
endmacro()

# NCCL (the engine for CUDA tensors in lunet.dist). 2.13 is the oldest with
# ncclGetLastError (ncclAvg and bfloat16 came in 2.10).
macro(lunet_find_nccl)
  lunet_find_toolkit_lib(NCCL NCCL nccl.h nccl NCCL PATCH 2.13)
endmacro()

# cuDNN (the alternative BatchNorm path, lunet.backends.cudnn), 9 or newer.
macro(lunet_find_cudnn)
  lunet_find_toolkit_lib(CUDNN cuDNN cudnn_version.h cudnn CUDNN PATCHLEVEL 9.0)
endmacro()
