# ctest helper: configure, build and run csrc/examples as a separate project that pulls eor in
# with add_subdirectory (cmake -DSRC=... -DBIN=... -P build_standalone.cmake).
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${BIN} -DCMAKE_BUILD_TYPE=Release
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the standalone example failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BIN} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the standalone example failed")
endif()
execute_process(COMMAND ${BIN}/buffer_example WORKING_DIRECTORY ${BIN} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the standalone example failed")
endif()
